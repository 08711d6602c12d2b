"""The README's model table is generated from the code and must stay in step with it, row by row."""

import pathlib

import pytest

from keras_visrec.model_table import markdown_table, model_rows

README = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
_HEADER = "| model | family | params (M) | GMACs | input |"


def _readme_rows():
    lines = README.split(_HEADER, 1)[1].splitlines()[2:]
    rows = []
    for line in lines:
        if not line.startswith("| `"):
            break
        rows.append(line)
    return rows


CHUNKS = 6  # every row is checked; in round-robin chunks so pytest-xdist spreads the heavy builds


@pytest.mark.slow
@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_every_readme_row_equals_the_generated_row(chunk):
    from keras_visrec.models import list_models

    readme = {line.split("`")[1]: line for line in _readme_rows()}
    for name in list_models()[chunk::CHUNKS]:
        generated = markdown_table(model_rows(name)).splitlines()[2:]
        assert [readme.get(name)] == generated, f"README row of {name} is stale; regenerate with `make models`"


def test_readme_lists_every_registered_model():
    from keras_visrec.models import list_models

    listed = [line.split("`")[1] for line in _readme_rows()]
    assert listed == list_models(), "README model table is stale; regenerate with `make models`"
