"""The measured dense/sparse rule: synthetic confidence masks, the crossover table, its cache, the probe,
and the sparse mode's executors taking each convolution's decision from it."""

import json

import keras
import numpy as np
import pytest

from keras_visrec.adpc import AnytimeHRNet
from keras_visrec.adpc import crossover as xo
from keras_visrec.adpc.masking import MaskHook, SparseExecutor


def _fake_measure(dense=1.0, fixed=0.2, per_share=1.0, calls=None):
    """A probe stand-in: every way costs fixed + per_share · share (seconds), dense constant."""

    def measure(kind):
        if calls is not None:
            calls.append(kind)
        return xo.KindCosts(dense, {way: (fixed, per_share) for way in xo.ways_of(kind)})

    return measure


# --- synthetic masks ---------------------------------------------------------------------------

def test_synthetic_masks_have_the_share_and_are_nested():
    uncertainty = xo.synthetic_uncertainty(48, 80, seed=3)
    previous = None
    for share in (0.9, 0.6, 0.3, 0.1):
        mask = xo.synthetic_mask(48, 80, share, uncertainty=uncertainty)
        assert mask.shape == (48, 80) and set(np.unique(mask)) <= {0.0, 1.0}
        assert int(mask.sum()) == round(share * 48 * 80)
        if previous is not None:
            assert np.all(mask <= previous)  # a later exit computes a subset
        previous = mask
    np.testing.assert_array_equal(xo.synthetic_uncertainty(48, 80, seed=3), uncertainty)
    assert not np.array_equal(xo.synthetic_uncertainty(48, 80, seed=4), uncertainty)


def test_synthetic_mask_is_thin_bands_at_low_share():
    """At a low share the mask follows region boundaries: far more edge per area than one blob."""
    mask = xo.synthetic_mask(128, 256, 0.1, seed=0)
    edges = np.sum(mask[:, 1:] != mask[:, :-1]) + np.sum(mask[1:] != mask[:-1])
    blob_edges = 4 * np.sqrt(mask.sum())  # a square of the same area
    assert edges > 8 * blob_edges


@pytest.mark.parametrize("share", [0.0, 1.0, -0.2, 1.5, True, "0.5"])
def test_synthetic_mask_rejects_share_outside_the_open_interval(share):
    with pytest.raises(ValueError, match="share"):
        xo.synthetic_mask(16, 16, share)


# --- the table -----------------------------------------------------------------------------------

def test_cost_lines_and_crossovers():
    line = xo._fit_line([(0.75, 0.9), (0.25, 0.4)])
    assert line == pytest.approx((0.15, 1.0))
    costs = xo.KindCosts(0.65, {"pixels": line, "strips": (0.1, 0.2), "never": (2.0, 1.0), "flat": (1.0, 0.0)})
    assert costs.crossover("pixels") == pytest.approx(0.5)
    assert costs.crossover("strips") == 1.0  # faster even with everything computed
    assert costs.crossover("never") == 0.0 and costs.crossover("flat") == 0.0
    assert costs.cost("pixels", 0.5) == pytest.approx(0.65)
    assert xo._fit_line([(0.3, 0.5), (0.3, 0.7)]) == (0.5, 0.0)
    kind = xo.conv_kind(3, 1, 8, 8, 16, 16, 1)
    assert xo.ways_of(kind) == ("pixels", "strips")
    assert xo.ways_of(xo.conv_kind(1, 1, 8, 8, 16, 16, 1)) == ("pixels",)
    assert xo.ways_of(xo.conv_kind(3, 1, 8, 8, 16, 16, 4)) == ("tiles",)
    fixed = xo.KindCosts.from_crossover(kind, 0.4)
    assert fixed.crossover("pixels") == pytest.approx(0.4) and "strips" not in fixed.ways
    assert xo.KindCosts.from_crossover(kind, 0.0).ways == {}
    again = xo.KindCosts.from_json(kind, fixed.to_json())
    assert again.ways == fixed.ways and again.dense == fixed.dense and again.blend == 0.0
    blended = xo.KindCosts.from_json(kind, xo.KindCosts(1.0, {"pixels": (0.1, 1.0)}, blend=0.25).to_json())
    assert blended.blend == 0.25 and blended.ways == {"pixels": (0.1, 1.0)}
    with pytest.raises(ValueError, match="cost model"):
        xo.KindCosts.from_json(kind, {"dense": 1.0, "tiles": [0.0, 1.0]})  # not a way of this kind


def test_table_probes_once_and_caches_to_disk(tmp_path):
    path = str(tmp_path / "cross.json")
    calls = []
    table = xo.CrossoverTable(path=path, measure=_fake_measure(dense=0.7, fixed=0.2, per_share=1.0, calls=calls))
    kind = xo.conv_kind(3, 1, 8, 8, 16, 16, 1)
    assert table.crossover(kind) == pytest.approx(0.5)
    assert table.crossover(kind) == pytest.approx(0.5) and calls == [kind]
    stored = json.load(open(path))
    assert stored["machines"][table.signature] == {kind: {"dense": 0.7, "pixels": [0.2, 1.0], "strips": [0.2, 1.0]}}
    again = xo.CrossoverTable(path=path, measure=_fake_measure(calls=calls))
    assert again.crossover(kind) == pytest.approx(0.5) and calls == [kind]  # read, not probed


def test_table_keys_entries_by_machine(tmp_path, monkeypatch):
    path = str(tmp_path / "cross.json")
    kind = xo.conv_kind(1, 1, 4, 4, 8, 8, 1)
    xo.CrossoverTable(entries={kind: 0.3}, path=path)._write()
    assert xo.CrossoverTable(path=path, probe=False).crossover(kind) == 0.3
    with pytest.raises(KeyError, match="probing is off"):  # measured with another clock
        xo.CrossoverTable(path=path, probe=False, clock="wall").crossover(kind)
    monkeypatch.setattr(xo, "machine_signature", lambda: "another machine")
    with pytest.raises(KeyError, match="probing is off"):
        xo.CrossoverTable(path=path, probe=False).crossover(kind)


def test_table_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        xo.CrossoverTable(path=str(bad))
    bad.write_text(json.dumps({"format": 99}))
    with pytest.raises(ValueError, match="not a keras_visrec crossover table"):
        xo.CrossoverTable(path=str(bad))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        xo.CrossoverTable(entries={xo.conv_kind(1, 1, 4, 4, 8, 8, 1): 1.5})
    with pytest.raises(ValueError, match="Unknown crossover kind"):
        xo.CrossoverTable(entries={"pool 2x2": 0.5})
    with pytest.raises(ValueError, match="rounds"):
        xo.CrossoverTable(rounds=0)
    with pytest.raises(ValueError, match="clock"):
        xo.CrossoverTable(clock="sundial")
    with pytest.raises(TypeError, match="CrossoverTable"):
        xo.set_default_table({"a": 1})


def test_default_table_follows_the_cache_and_can_be_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_VISREC_CACHE", str(tmp_path))
    monkeypatch.setattr(xo, "_DEFAULT", {"table": None, "path": None})
    table = xo.default_table()
    assert table.path == str(tmp_path / xo.CACHE_FILE) and xo.default_table() is table
    mine = xo.CrossoverTable(entries={})
    assert xo.set_default_table(mine) is table and xo.default_table() is mine
    xo.set_default_table(None)
    assert xo.default_table().path == str(tmp_path / xo.CACHE_FILE)


@pytest.mark.parametrize("kind", [xo.conv_kind(3, 2, 4, 6, 8, 12, 1), xo.head_kind((4, 6), 3, 8, 8, 2)])
def test_real_probe_times_every_way(kind):
    dense, ways, blend = xo._probe(xo._parse(kind), rounds=1)
    assert np.isfinite(dense) and dense >= 0 and tuple(ways) == xo.ways_of(kind)
    assert np.isfinite(blend) and blend >= 0 and (blend == 0.0 or kind.startswith("conv"))
    for points in ways.values():
        (s1, t1), (s2, t2) = points
        assert min(t1, t2) >= 0 and 0 < s1 < s2  # the way's share at the two probe masks (times not asserted)


# --- the model: kinds, calibration and the executors' decisions ---------------------------------

@pytest.fixture
def tiny(tiny_config):
    return AnytimeHRNet(tiny_config, classes=5, exit_width=8, threshold=0.9)


def test_model_kinds_cover_every_masked_conv_and_the_head(tiny):
    kinds = xo.model_kinds(tiny, (64, 64, 3))
    names = [n for names in kinds.values() for n in names]
    masked = [layer.name for layer in tiny.network.layers if hasattr(layer, "blend")]
    assert set(names) <= set(masked) and len(names) == len(set(names))
    heads = [k for k in kinds if k.startswith("head")]
    assert heads == [xo.head_kind((8, 16, 32, 64), 5, 16, 16, 1)]
    assert sorted(kinds[heads[0]]) == [f"{tiny.name}_last_layer_0", f"{tiny.name}_last_layer_3"]
    assert xo.conv_kind(3, 1, 8, 8, 16, 16, 1) in kinds  # a 1/4-resolution basic-block conv
    tiled = AnytimeHRNet(tiny.config_dict, classes=5, exit_width=8, tile=4)
    # with 4×4 tiles the 1/32 maps (2×2) are one tile: always dense, never looked up
    assert not any(" 2x2 " in k for k in xo.model_kinds(tiled, (64, 64, 3)))


def test_calibrate_probes_each_kind_once(tiny):
    calls = []
    table = xo.CrossoverTable(measure=_fake_measure(calls=calls))
    result = xo.calibrate(tiny, (64, 64, 3), table=table, progress=False)
    assert sorted(result) == sorted(xo.model_kinds(tiny, (64, 64, 3))) == sorted(calls)
    xo.calibrate(tiny, (64, 64, 3), table=table, progress=False)
    assert len(calls) == len(result)


def _decisions(monkeypatch):
    """Records ``(kind, way, computed share)`` of every decision."""
    taken = []
    original = SparseExecutor._choose

    def spy(self, kind, dense, ways, stride=1, blend_only_in_ways=False):
        share = float(keras.ops.mean(self.mask))  # 1-pixel tiles: the share of active tiles

        def mark(way, fn):
            def run():
                taken.append((kind, way, share))
                return fn()
            return run
        return original(self, kind, mark("dense", dense), {w: (mark(w, fn), prep) for w, (fn, prep) in ways.items()},
                        stride, blend_only_in_ways)

    monkeypatch.setattr(SparseExecutor, "_choose", spy)
    return taken


def _sparse_equals_dense(tiny, monkeypatch, x, threshold, entries):
    """Runs ``tiny`` densely, then sparsely with a table of ``entries``; checks they agree; returns the decisions."""
    dense = [keras.ops.convert_to_numpy(o) for o in tiny.anytime(x, mode="dense", threshold=threshold)]
    taken = _decisions(monkeypatch)
    tiny.dense_above = None
    monkeypatch.setattr(xo, "_DEFAULT", {"table": xo.CrossoverTable(entries=entries, probe=False), "path": None})
    sparse = tiny.anytime(x, mode="sparse", threshold=threshold)
    for d, s in zip(dense, sparse):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(s), d, atol=1e-4 * max(1.0, float(np.abs(d).max())))
    return taken


def test_measured_rule_decides_per_kind_and_stays_exact(tiny, monkeypatch):
    x = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    first = keras.ops.convert_to_numpy(keras.ops.softmax(tiny.anytime(x, mode="none")[0], axis=-1)).max(-1)
    threshold = float(np.quantile(first, 0.45))  # segment 2 computes 45 %, later segments less (nested)
    kinds = sorted(xo.model_kinds(tiny, (64, 64, 3)))
    # always dense, always sparse, or decided by the measured share against 0.3 or 0.6
    entries = {kind: (0.0, 1.0, 0.3, 0.6)[i % 4] for i, kind in enumerate(kinds)}
    taken = _sparse_equals_dense(tiny, monkeypatch, x, threshold, entries)
    assert {k for k, _, _ in taken} == set(kinds)
    assert {way for _, way, _ in taken} == {"dense", "pixels"}
    for kind, way, share in taken:  # eager: the switch runs the way its measured share picks
        rule = entries[kind]  # a fixed crossover: the pixels way costs share / rule of the dense conv
        assert way == ("pixels" if 0.0 < rule and share < rule else "dense"), (kind, share)
    decided = {way for kind, way, _ in taken if entries[kind] in (0.3, 0.6)}
    assert decided == {"dense", "pixels"}  # the run-time choice went both ways


def test_measured_costs_pick_strips_and_stay_exact(tiny, monkeypatch):
    x = np.random.default_rng(5).uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    kinds = xo.model_kinds(tiny, (64, 64, 3))
    # strips cheapest for every 3x3 conv, pixels for the rest, never dense
    # (a strip share counts halo elements and can pass 1 on tiny maps: a flat strips line keeps them cheapest)
    entries = {kind: xo.KindCosts(10.0, {way: (0.0, 0.0) if way == "strips" else (1.0, 1.0) for way in xo.ways_of(kind)})
               for kind in kinds}
    taken = _sparse_equals_dense(tiny, monkeypatch, x, 0.6, entries)
    assert taken
    for kind, way, _ in taken:
        assert way == ("strips" if "strips" in xo.ways_of(kind) else "pixels"), kind


def test_dense_only_resolution_builds_no_indices(tiny_config):
    mask = keras.ops.convert_to_tensor((np.random.default_rng(1).random((1, 16, 16)) < 0.3).astype("float32"))
    layer = keras.layers.Conv2D(4, 3)  # not masked: the hook says so
    hook = MaskHook(mask, "sparse", 1, None, xo.CrossoverTable(entries={}, probe=False))
    with pytest.raises(TypeError, match="MaskedConv2D"):
        hook(layer, np.zeros((1, 16, 16, 2), "float32"), 1, 1)
    from keras_visrec.adpc.layers import MaskedConv2D

    conv = MaskedConv2D(4, 3, padding="same")
    x = np.random.default_rng(2).normal(size=(1, 16, 16, 2)).astype("float32")
    kind = xo.conv_kind(3, 1, 2, 4, 16, 16, 1)
    hook = MaskHook(mask, "sparse", 1, None, xo.CrossoverTable(entries={kind: 0.0}, probe=False))
    out = hook(conv, x, 1, 1)
    executor = hook.executor(16, 16)
    assert executor._plan is None  # never gathered: no plan, no indices
    expected = conv.blend(conv(x), mask)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), keras.ops.convert_to_numpy(expected), atol=1e-5)


@pytest.mark.parametrize("dense_fill, blend, way", [("rbf", 0.9, "pixels"), ("computed", 0.8, "pixels"),
                                                    ("computed", 0.9, "dense")])
def test_the_blend_counts_against_the_ways_when_the_dense_choice_skips_it(monkeypatch, dense_fill, blend, way):
    """Under ``dense_fill="computed"`` a sparse way pays the blend and the dense conv does not: at a 30 %
    share the pixels way (0.5 s per share, dense 1 s) wins unless its blend lifts it over the dense conv."""
    from keras_visrec.adpc.layers import MaskedConv2D

    mask = keras.ops.convert_to_tensor((np.arange(256).reshape(1, 16, 16) % 10 < 3).astype("float32"))
    conv = MaskedConv2D(4, 3, padding="same")
    x = np.random.default_rng(2).normal(size=(1, 16, 16, 2)).astype("float32")
    conv.build(x.shape)
    kind = xo.conv_kind(3, 1, 2, 4, 16, 16, 1)
    costs = xo.KindCosts(1.0, {"pixels": (0.0, 0.5), "strips": (5.0, 5.0)}, blend=blend)
    hook = MaskHook(mask, "sparse", 1, None, xo.CrossoverTable(entries={kind: costs}, probe=False), dense_fill)
    taken = _decisions(monkeypatch)
    hook(conv, x, 1, 1)
    assert [w for _, w, _ in taken] == [way]


def test_hook_rejects_a_bad_fixed_rule():
    with pytest.raises(ValueError, match="dense_above"):
        MaskHook(keras.ops.ones((1, 4, 4)), "sparse", 1, 1.5)
    with pytest.raises(ValueError, match="mode"):
        MaskHook(keras.ops.ones((1, 4, 4)), "fast")
