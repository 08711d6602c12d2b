"""Per-exit FLOPs as the paper counts them."""

import pytest

from keras_visrec.adpc import AnytimeHRNet, exit_flops


@pytest.mark.slow
def test_w48_rh_reproduces_paper():
    model = AnytimeHRNet("w48", classes=19, exit_type="rh")
    report = exit_flops(model, (1024, 2048, 3))
    paper = (41.9, 105.6, 368.0, 701.3)
    for ours, theirs in zip(report.gflops, paper):
        assert abs(ours - theirs) / theirs < 0.005, (report.gflops, paper)
    assert abs(report.base_gflops - 696.2) / 696.2 < 0.005
    assert report.cumulative[1] - report.cumulative[0] == report.segments[1]


def test_masked_fraction_scales_segments(tiny_config):
    model = AnytimeHRNet(tiny_config, classes=11, exit_width=16)
    dense = exit_flops(model, (64, 64, 3))
    half = exit_flops(model, (64, 64, 3), computed_fractions=(0.5, 0.5, 0.5), interpolation=False)
    assert half.segments[0] == dense.segments[0]  # stem, layer1, exit1: never masked
    for k in (1, 2, 3):
        assert abs(half.segments[k] - dense.segments[k] / 2) <= 1
    with_rbf = exit_flops(model, (64, 64, 3), computed_fractions=(0.5, 0.5, 0.5))
    assert with_rbf.segments[3] > half.segments[3]
    none = exit_flops(model, (64, 64, 3), computed_fractions=(0.0, 0.0, 0.0))
    assert none.cumulative[3] == none.cumulative[0]


def test_bad_fractions(tiny_config):
    model = AnytimeHRNet(tiny_config, classes=11, exit_width=16)
    with pytest.raises(ValueError, match="computed_fractions"):
        exit_flops(model, (64, 64, 3), computed_fractions=(0.5,))
