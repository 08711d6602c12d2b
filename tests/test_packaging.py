"""Packaging: one import namespace, every package listed, the catalogue shipped as data."""

import configparser
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
MAPPED = {"zoo": "keras_visrec.zoo", "converters": "keras_visrec.converters", "tflite": "keras_visrec.tflite"}


def _setup_cfg():
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return parser


def test_every_package_directory_is_listed_in_setup_cfg():
    listed = set(_setup_cfg()["options"]["packages"].split())
    found = set()
    for init in ROOT.glob("**/__init__.py"):
        parts = init.parent.relative_to(ROOT).parts
        if parts[0] in MAPPED:
            found.add(".".join((MAPPED[parts[0]],) + parts[1:]))
        elif parts[0] == "keras_visrec":
            found.add(".".join(parts))
    assert found == listed


def test_subpackages_import_under_one_namespace():
    import keras_visrec.converters
    import keras_visrec.tflite
    import keras_visrec.zoo

    for module, folder in [(keras_visrec.zoo, "zoo"), (keras_visrec.converters, "converters"),
                           (keras_visrec.tflite, "tflite")]:
        assert pathlib.Path(module.__file__).parent == ROOT / folder


def test_package_data_ships_the_catalogue():
    data = _setup_cfg()["options.package_data"]
    assert "*.json" in data["keras_visrec.zoo"] and "*.json" in data["keras_visrec.tflite"]
    assert (ROOT / "zoo" / "catalogue.json").is_file()
