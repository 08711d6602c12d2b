"""Training arms (Scratch-B rule, strategies, tfds path) and the CI-sized study through the CLI."""

import csv
import json
import os

import numpy as np
import pytest

import keras_visrec
from keras_visrec import cifar
from keras_visrec.pruning import arms


def test_paper_defaults_and_scratch_b_rule():
    config = arms.TrainConfig.paper()
    assert (config.epochs, config.batch_size, config.learning_rate, config.momentum, config.weight_decay) == \
        (160, 64, 0.1, 0.9, 1e-4)
    assert config.milestones == (0.5, 0.75) and config.finetune_epochs == 40 and config.finetune_learning_rate == 1e-3
    assert arms.scratch_b_epochs(160, 313_463_808, 206_279_680) == 243  # VGG-16-A: 1.52 × 160
    assert arms.scratch_b_epochs(90, 4.0e9, 1.0e9, cap=2.0) == 180  # ImageNet cap
    with pytest.raises(ValueError, match="epochs"):
        arms.TrainConfig(epochs=0)


def test_arms_train_under_mirrored_strategy(two_cpu_strategy):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (32, 16, 16, 3)).astype("float32")
    y = rng.integers(0, 3, 32)
    train = arms.make_dataset(x, y, batch_size=16, training=True, flip=False)
    test = arms.make_dataset(x, y, batch_size=16)
    model = cifar.CIFARVGG([4, "M", 8], head="slimming", classes=3, input_shape=(16, 16, 3), name="v")
    config = arms.TrainConfig.cpu(epochs=1, finetune_epochs=1)
    trained, base = arms.train_baseline(model, train, test, config, strategy=two_cpu_strategy, bn_sparsity=1e-4)
    assert base.arm == "baseline" and base.epochs == 1 and np.isfinite(base.loss)
    assert len(base.history["loss"]) == 1
    pruned, _ = keras_visrec.pruning.l1_prune(trained, widths={"v_conv_2": 4})
    _, tuned = arms.fine_tune_pruned(pruned, train, test, config, strategy=two_cpu_strategy)
    _, scratch = arms.train_scratch(pruned, train, test, config, budget="B", full_macs=base.macs,
                                    strategy=two_cpu_strategy)
    assert tuned.macs == scratch.macs < base.macs
    assert scratch.epochs == arms.scratch_b_epochs(1, base.macs, scratch.macs) >= 1
    fresh = arms.scratch_model(pruned, seed=1)
    assert [w.shape for w in fresh.weights] == [w.shape for w in pruned.weights]
    assert not np.allclose(fresh.get_layer("v_conv_0").get_weights()[0], pruned.get_layer("v_conv_0").get_weights()[0])


def test_cifar_through_tensorflow_datasets_mock():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=8):
        train, test = arms.cifar_datasets("cifar10", batch_size=4)
        images, labels = next(iter(train))
    assert images.shape == (4, 32, 32, 3) and labels.shape == (4,)
    with pytest.raises(ValueError, match="cifar10"):
        arms.cifar_datasets("svhn")


@pytest.mark.slow
def test_ci_study_through_the_command_line(tmp_path):
    out = str(tmp_path / "study")
    code = keras_visrec.cli.main([
        "prune-study", "--method", "l1", "--config", "vgg_custom", "--vgg-cfg", "16,M,32,M,64,M,64",
        "--pruned-cfg", "8,M,16,M,32,M,64", "--data", "digits", "--image-size", "16", "--epochs", "1",
        "--seeds", "0", "1", "--output-dir", out, "--quiet",
    ])
    assert code == 0
    assert {"study.md", "study.csv", "study.json", "study.png"} <= set(os.listdir(out))
    with open(os.path.join(out, "study.csv")) as handle:
        rows = {row["arm"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"baseline", "fine-tune", "scratch-E", "scratch-B"}
    full = keras_visrec.count_flops(cifar.CIFARVGG([16, "M", 32, "M", 64, "M", 64], input_shape=(16, 16, 3))).total
    small = keras_visrec.count_flops(cifar.CIFARVGG([8, "M", 16, "M", 32, "M", 64], input_shape=(16, 16, 3))).total
    assert int(rows["baseline"]["macs"]) == full
    assert all(int(rows[a]["macs"]) == small for a in ("fine-tune", "scratch-E", "scratch-B"))
    assert int(rows["scratch-B"]["epochs"]) == round(full / small)
    with open(os.path.join(out, "study.json")) as handle:
        runs = json.load(handle)["runs"]
    assert len(runs) == 8 and all(r["epochs"] >= 1 and len(r["history"]["loss"]) == r["epochs"] for r in runs)
    assert all(np.isfinite(r["loss"]) and 0.0 <= r["accuracy"] <= 1.0 for r in runs)
    assert max(float(r["accuracy_mean"]) for r in rows.values()) > 0.3  # well above chance (0.1)
