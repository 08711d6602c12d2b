"""The one --data resolver: image folders (with a stratified holdout), tensorflow-datasets names and digits,
and prune-study reading any of them through the CLI vocabulary."""

import argparse

import numpy as np
import pytest

from keras_visrec.recipe.datasets import load_image_source, source_from_args


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three classes of 8×8 PNGs (5, 4 and 3 images), each image a distinct grey level."""
    Image = pytest.importorskip("PIL.Image")
    root = tmp_path_factory.mktemp("folder")
    level = 0
    for name, count in (("a", 5), ("b", 4), ("c", 3)):
        (root / name).mkdir()
        for index in range(count):
            level += 10
            Image.fromarray(np.full((8, 8, 3), level, "uint8")).save(root / name / f"{index}.png")
    return root


def _levels(source):
    return sorted((int(label), int(image[0, 0, 0])) for image, label in source.dataset.as_numpy_iterator())


def test_digits_are_a_source_like_any_other():
    train, test = load_image_source("digits", "train", digits_size=16), load_image_source("digits", "test", digits_size=16)
    assert (train.num_classes, train.num_examples + test.num_examples) == (10, 1797)
    assert test.num_examples == 450 and load_image_source("digits", "validation").num_examples == 450
    image, label = next(train.dataset.as_numpy_iterator())
    assert image.shape == (16, 16, 3) and image.dtype == np.uint8 and label.dtype == np.int32
    assert "digits" in train.description
    with pytest.raises(ValueError, match="split"):
        load_image_source("digits", "extra")


def test_folder_holdout_is_stratified_disjoint_and_seeded(folder):
    whole = load_image_source(str(folder))
    train = load_image_source(str(folder), "train", holdout=0.4, seed=1)
    held = load_image_source(str(folder), "test", holdout=0.4, seed=1)
    assert whole.num_examples == 12 and (train.num_examples, held.num_examples) == (7, 5)
    assert sorted(_levels(train) + _levels(held)) == _levels(whole)  # disjoint, together the folder
    assert sorted({label for label, _ in _levels(held)}) == [0, 1, 2]  # every class held out
    assert _levels(load_image_source(str(folder), "test", holdout=0.4, seed=1)) == _levels(held)
    assert _levels(load_image_source(str(folder), "test", holdout=0.4, seed=2)) != _levels(held)
    for bad in (0.0, 1.0, 1, "0.2"):
        with pytest.raises(ValueError, match="holdout"):
            load_image_source(str(folder), "train", holdout=bad)


def test_source_from_args_reads_the_shared_flags(folder):
    args = argparse.Namespace(data=str(folder), data_dir=None, manual_dir=None)
    assert source_from_args(args).num_examples == 12
    with pytest.raises(FileNotFoundError, match="not found"):
        load_image_source("./missing_folder")
    with pytest.raises(ValueError, match="source"):
        load_image_source("")


def _prune_study_parser():
    from keras_visrec.pruning import cli

    parser = argparse.ArgumentParser(prog="keras-visrec")
    cli.register(parser.add_subparsers(dest="command"))
    return parser


def test_prune_study_reads_an_image_folder_through_the_cli(folder, tmp_path, monkeypatch, capsys):
    from keras_visrec.pruning import cli, study

    seen = {}

    def fake_study(method, config, train, test, **kwargs):
        seen.update(method=method, config=config, train=train, test=test, **kwargs)
        return study.StudyResult(method, config, (), (), {})

    monkeypatch.setattr(study, "run_study", fake_study)
    args = _prune_study_parser().parse_args([
        "prune-study", "--method", "l1", "--config", "vgg_custom", "--vgg-cfg", "4,M,8", "--pruned-cfg", "2,M,8",
        "--data", str(folder), "--holdout", "0.4", "--image-size", "16", "--batch-size", "4", "--seed", "3",
        "--output-dir", str(tmp_path), "--quiet"])
    assert cli._run(args) == 0
    assert seen["classes"] == 3 and seen["input_shape"] == (16, 16, 3) and seen["seeds"] == (3,)
    assert seen["strategy"] is None and seen["output_dir"] == str(tmp_path) and seen["verbose"] == 0
    images, labels = next(iter(seen["train"]))
    assert images.shape == (4, 16, 16, 3) and images.dtype.name == "float32"
    assert int(seen["train"].cardinality()) == 2 and sum(int(b[1].shape[0]) for b in seen["test"]) == 5


def test_prune_study_old_spellings_still_parse(tmp_path, capsys):
    parser = _prune_study_parser()
    old = parser.parse_args(["prune-study", "--method", "l1", "--config", "vgg16_a", "--dataset", "digits",
                             "--out", str(tmp_path), "--strategy", "default"])
    new = parser.parse_args(["prune-study", "--method", "l1", "--config", "vgg16_a", "--data", "digits",
                             "--output-dir", str(tmp_path), "--strategy", "none"])
    assert {k: v for k, v in vars(old).items() if k != "func"} == {k: v for k, v in vars(new).items() if k != "func"}
    err = capsys.readouterr().err
    assert "--dataset is deprecated" in err and "use --data" in err
    assert "--out is deprecated" in err and "use --output-dir" in err and "--strategy default is deprecated" in err
    with pytest.raises(SystemExit):
        parser.parse_args(["prune-study", "--method", "l1", "--config", "vgg16_a", "--output-dir", "x",
                           "--strategy", "parallel"])
    with pytest.raises(SystemExit):
        new.func(parser.parse_args(["prune-study", "--method", "l1", "--config", "vgg16_a"]))
    assert "required: --output-dir" in capsys.readouterr().err
