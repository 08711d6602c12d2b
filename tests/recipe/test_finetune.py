"""Transfer end to end on real data (scikit-learn's digits as an image folder), resume, scale-out."""

import json
import os

import keras
import numpy as np
import pytest

import keras_visrec
from keras_visrec.files import exclusive_lock
from keras_visrec.recipe.cli import main
from keras_visrec.recipe.finetune import build_model, finetune
from keras_visrec.recipe.head import replace_head

ACCURACY_BAR = 0.75  # held-out digits after 4 short epochs (chance: 0.10; measured ~0.86)
TINY = ["--model", "convnext", "--depths", "1,1,1,1", "--dims", "16,32,64,128", "--image-size", "32"]
LIGHT = ["--mixup", "0", "--cutmix", "0", "--no-randaugment", "--reprob", "0", "--no-random-crop",
         "--drop-path", "0", "--head-init-scale", "1.0", "--lr", "4e-3", "--weight-decay", "0.05",
         "--warmup-epochs", "1", "--batch-size", "64"]


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory):
    """scikit-learn's digits written as PNG files in the image_dataset_from_directory layout."""
    Image = pytest.importorskip("PIL.Image")
    from keras_visrec.data import load_digits_images

    root = tmp_path_factory.mktemp("digits")
    (x_train, y_train), (x_test, y_test) = load_digits_images(size=32)
    for split, images, labels in (("train", x_train, y_train), ("val", x_test, y_test)):
        for index, (image, label) in enumerate(zip(images, labels)):
            folder = root / split / f"digit_{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.astype("uint8")).save(folder / f"{index}.png")
    return root


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, at_epoch):
        super().__init__()
        self.at_epoch = at_epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at_epoch:
            raise KeyboardInterrupt("simulated interruption")


class _Record(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.start_step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        self.start_stem = keras.ops.convert_to_numpy(self.model.get_layer("convnext_stem_conv").kernel)


@pytest.mark.slow
def test_cli_finetune_reaches_the_bar_and_resumes(digits_folder, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["finetune", str(digits_folder / "train"), "--val-data", str(digits_folder / "val"),
            "--output-dir", str(out), "--epochs", "4", *TINY, *LIGHT]
    # First run: interrupted before its third epoch.
    record = _Record()
    with pytest.raises(KeyboardInterrupt):
        finetune("convnext", str(digits_folder / "train"), val_data=str(digits_folder / "val"), output_dir=str(out),
                 depths=(1, 1, 1, 1), dims=(16, 32, 64, 128), image_size=32, epochs=4, batch_size=64,
                 learning_rate=4e-3, weight_decay=0.05, warmup_epochs=1, drop_path_rate=0.0, head_init_scale=1.0,
                 mixup=0, cutmix=0, rand_augment=False, random_erasing=0, crop_scale=None, verbose=0,
                 callbacks=[_Interrupt(2), record])
    assert record.start_step == 0
    state = json.loads((out / "state.json").read_text())
    assert (state["epoch"], state["step_in_epoch"], state["step"]) == (2, 0, 2 * 22)  # 1347 images / 64: 22 steps
    assert state["optimizer_step"] == 44 and state["recipe"]["epochs"] == 4
    assert sorted(os.listdir(out)) == [".lock", "ckpt-00000044.state.npz", "ckpt-00000044.weights.h5",
                                       "state.json"]  # no temporary files left

    # Second run, through the command line with the same arguments: continues at epoch 2, step 44.
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "resumed at epoch 2, step 44" in printed
    state = json.loads((out / "state.json").read_text())
    assert state["epoch"] == 4 and state["step"] == state["optimizer_step"] == 4 * 22
    assert len(state["history"]["val_accuracy"]) == 4
    assert state["history"]["val_accuracy"][-1] > ACCURACY_BAR, state["history"]["val_accuracy"]
    print("val_accuracy per epoch:", state["history"]["val_accuracy"])


@pytest.mark.slow
def test_mirrored_strategy_two_cpus(digits_folder, tmp_path, two_cpu_strategy):
    record = _Record()
    result = finetune("convnext", str(digits_folder / "val"), output_dir=str(tmp_path / "m"),
                      depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), image_size=32, epochs=1, batch_size=64,
                      learning_rate=2e-3, strategy=two_cpu_strategy, mixup=0.8, cutmix=1.0, rand_augment=True,
                      random_erasing=0.25, crop_scale=(0.5, 1.0), ema=0.99, verbose=0, callbacks=[record])
    assert result.final_step == 8  # 450 images / 64
    assert record.start_step == 0
    kernel = result.model.get_layer("convnext_head_dense").kernel
    assert "Mirrored" in type(kernel.value).__name__ or hasattr(kernel.value, "values")
    assert {"ckpt-00000008.weights.h5", "ckpt-00000008.state.npz"} <= set(os.listdir(tmp_path / "m"))


def test_bad_inputs(digits_folder, tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(b"")
    tiny = dict(output_dir=str(tmp_path / "o"), depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), image_size=32, epochs=1)
    with pytest.raises(ValueError, match="no class subfolders"):
        finetune("convnext", str(tmp_path / "flat"), **tiny)
    with pytest.raises(ValueError, match="Unknown dataset 'mnistt'.*mnist"):
        finetune("convnext", "mnistt", **tiny)
    with pytest.raises(ValueError, match="classes`=7 disagrees .* has 10 classes"):
        finetune("convnext", str(digits_folder / "val"), classes=7, **tiny)
    with pytest.raises(ValueError, match="layer_decay"):
        finetune("convnext", str(digits_folder / "val"), layer_decay=1.2, **tiny)
    with pytest.raises(ValueError, match="mixed_precision"):
        finetune("convnext", str(digits_folder / "val"), mixed_precision="fp8", **tiny)
    with pytest.raises(ValueError, match="checkpoint_steps.*positive integer or None"):
        finetune("convnext", str(digits_folder / "val"), checkpoint_steps=0, **tiny)
    with pytest.raises(ValueError, match="seed.*non-negative"):
        finetune("convnext", str(digits_folder / "val"), seed=-1, **tiny)
    headless = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="output has 3 classes .* has 10"):
        finetune(headless, str(digits_folder / "val"), **tiny)


def test_replace_head_keeps_names_and_starts_small():
    model = keras_visrec.ConvNeXt((1, 1, 1, 1), (8, 16, 32, 64), input_shape=(32, 32, 3), classes=1000, name="c")
    new = replace_head(model, 7, head_init_scale=0.001, seed=0)
    assert new.output_shape == (None, 7)
    kernel = keras.ops.convert_to_numpy(new.get_layer("c_head_dense").kernel)
    assert 0 < np.abs(kernel).max() <= 2 * 0.02 * 0.001 + 1e-12  # truncated normal: within 2 std
    assert new.get_layer("c_stem_conv") is model.get_layer("c_stem_conv")
    with pytest.raises(ValueError, match="classes"):
        replace_head(model, 0)


def test_mixed_bfloat16_and_what_a_resume_directory_refuses_or_repairs(digits_folder, tmp_path):
    common = dict(image_size=32, epochs=1, batch_size=150, mixup=0, cutmix=0, rand_augment=False,
                  random_erasing=0, crop_scale=None, verbose=0, depths=(1, 1, 1, 1), dims=(8, 16, 32, 64))
    data = str(digits_folder / "val")
    result = finetune("convnext", data, output_dir=str(tmp_path), mixed_precision="mixed_bfloat16", **common)
    assert result.model.get_layer("convnext_stem_conv").compute_dtype == "bfloat16"
    assert result.model.get_layer("convnext_stem_conv").kernel.dtype == "float32"
    assert keras.config.dtype_policy().name == "float32"  # restored afterwards
    common["mixed_precision"] = "mixed_bfloat16"
    weights = tmp_path / "ckpt-00000003.weights.h5"
    assert weights.exists()  # 450 images / 150: three steps

    with pytest.raises(ValueError, match="Resume directory .* holds a run of model"):
        finetune("convnext", data, output_dir=str(tmp_path), **{**common, "dims": (8, 16, 32, 72)})
    with pytest.raises(ValueError, match=r"another recipe or data: epochs 1 → 2; learning_rate 5e-05 → 0.001"):
        finetune("convnext", data, output_dir=str(tmp_path), learning_rate=1e-3, **{**common, "epochs": 2})
    with pytest.raises(ValueError, match="another recipe or data: data examples 450 → 1347"):
        finetune("convnext", str(digits_folder / "train"), output_dir=str(tmp_path), **common)
    with exclusive_lock(str(tmp_path / ".lock")):  # as another process training here would
        with pytest.raises(RuntimeError, match=f"Another finetune process \\({os.getpid()}\\) is training"):
            finetune("convnext", data, output_dir=str(tmp_path), **common)

    # what a crash in the middle of a save leaves: temporaries and a checkpoint no manifest names
    (tmp_path / ".tmp-k3j2.weights.h5").write_bytes(b"half")
    (tmp_path / "ckpt-00000099.weights.h5").write_bytes(b"newer, never named")
    again = finetune("convnext", data, output_dir=str(tmp_path), **common)  # finished run: nothing to train
    assert again.resumed_step == 3 and again.final_step == 3
    assert sorted(os.listdir(tmp_path)) == [".lock", "ckpt-00000003.state.npz", "ckpt-00000003.weights.h5",
                                            "state.json"]
    stem = keras.ops.convert_to_numpy(again.model.get_layer("convnext_stem_conv").kernel)
    np.testing.assert_array_equal(stem, keras.ops.convert_to_numpy(result.model.get_layer("convnext_stem_conv").kernel))

    # a manifest written before format 2 (model identity only) still resumes
    state = json.loads((tmp_path / "state.json").read_text())
    legacy = {key: state[key] for key in ("model_name", "fingerprint", "classes", "image_size", "epoch", "step",
                                          "history")}
    (tmp_path / "state.json").write_text(json.dumps({**legacy, "checkpoint": weights.name}))
    assert finetune("convnext", data, output_dir=str(tmp_path), **common).resumed_step == 3

    # a checkpoint damaged after its manifest was written is refused, not half-loaded
    (tmp_path / "state.json").write_text(json.dumps(state))
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(ValueError, match="has .* bytes, the manifest says .*damaged"):
        finetune("convnext", data, output_dir=str(tmp_path), **common)


def test_only_the_chief_writes_checkpoints_under_multiworker():
    import types

    import tensorflow as tf

    from keras_visrec.recipe.finetune import _is_chief

    def strategy(task_type, task_id, jobs):
        spec = tf.train.ClusterSpec({job: [f"localhost:{2000 + i}" for i in range(n)] for job, n in jobs.items()})
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(spec, task_type=task_type, task_id=task_id)
        return types.SimpleNamespace(cluster_resolver=resolver)

    assert _is_chief(tf.distribute.get_strategy())
    assert _is_chief(strategy("worker", 0, {"worker": 2}))
    assert not _is_chief(strategy("worker", 1, {"worker": 2}))
    assert _is_chief(strategy("chief", 0, {"chief": 1, "worker": 2}))
    assert not _is_chief(strategy("worker", 0, {"chief": 1, "worker": 2}))


def test_build_model_from_weights_file_replaces_the_head(tmp_path):
    source = keras_visrec.ConvNeXt((1, 1, 1, 1), (8, 16, 32, 64), input_shape=(32, 32, 3), classes=5,
                                   classifier_activation=None)
    path = tmp_path / "pretrained.keras"
    source.save(path)
    model = build_model("convnext", classes=10, image_size=32, weights=str(path), weights_classes=5,
                        depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), head_init_scale=0.001)
    assert model.output_shape == (None, 10)
    for name in ("convnext_stem_conv", "convnext_stage_3_block_0_pointwise_conv_2", "convnext_head_layernorm"):
        for ours, theirs in zip(model.get_layer(name).weights, source.get_layer(name).weights):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(ours), keras.ops.convert_to_numpy(theirs))
    head = keras.ops.convert_to_numpy(model.get_layer("convnext_head_dense").kernel)
    assert head.shape == (64, 10) and np.abs(head).max() <= 2 * 0.02 * 0.001 + 1e-12
