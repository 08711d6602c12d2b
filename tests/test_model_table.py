"""The README's model table is generated from the code and must stay in step with it."""

import pathlib

import pytest

from keras_visrec.model_table import markdown_table, model_rows

README = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()


@pytest.mark.parametrize("pattern", ["convnext_atto", "convnext_v2_tiny", "convnext_isotropic_small",
                                     "resnet56_cifar", "hrnetv2_w18_small_v2"])
def test_readme_rows_equal_the_generated_rows(pattern):
    row = markdown_table(model_rows(pattern)).splitlines()[-1]
    assert row in README, f"README model table is stale; regenerate with `make models`:\n{row}"


def test_readme_lists_every_registered_model():
    from keras_visrec.models import list_models

    missing = [name for name in list_models() if f"| `{name}` |" not in README]
    assert not missing, f"models missing from the README table: {missing}"
