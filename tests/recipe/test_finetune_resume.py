"""Fine-tuning that survives SIGKILL: `keras-visrec finetune` killed mid-epoch and restarted with the
same command ends with the uninterrupted run's weights, bit for bit; augmentation is a pure function
of (seed, epoch, position), so the part of an epoch left out on resume changes nothing."""

import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import tensorflow as tf

from keras_visrec.recipe.augment import MixupOrCutMix, train_image_augmenter

STEPS_PER_EPOCH = 6  # 24 images, batch 4
EPOCHS = 3


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """24 small PNGs in 3 class folders (colour-coded, so the net learns something)."""
    Image = pytest.importorskip("PIL.Image")
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    for label in range(3):
        (root / f"class_{label}").mkdir()
        for index in range(8):
            image = rng.integers(0, 80, (36, 40, 3)).astype("uint8")
            image[..., label] += 150
            Image.fromarray(image).save(root / f"class_{label}" / f"{index}.png")
    return root


def _command(data, out):
    """The recipe's random parts — crop, flip, erasing, Mixup/CutMix, drop path — on a tiny ConvNeXt.

    RandAugment draws through the same stand-in generator as erasing and flip (its determinism is
    checked below); it is off here only because its graph (all 11 operations per draw) costs more
    CPU to trace and run than the rest of this test.
    """
    return [sys.executable, "-m", "keras_visrec", "finetune", str(data), "--output-dir", str(out),
            "--model", "convnext", "--depths", "1,1,1,1", "--dims", "8,16,32,64", "--image-size", "32",
            "--epochs", str(EPOCHS), "--batch-size", "4", "--lr", "1e-3", "--warmup-epochs", "1", "--seed", "3",
            "--no-randaugment", "--reprob", "0.5", "--checkpoint-steps", "2", "--deterministic"]


def _start(command):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _manifest(out):
    try:
        with open(os.path.join(out, "state.json")) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _checkpoint_arrays(out):
    """Every array of the final checkpoint (model weights and optimizer state) by its h5 path."""
    name = _manifest(out)["files"]["weights"]["name"]
    arrays = {}
    with h5py.File(os.path.join(out, name), "r") as handle:
        handle.visititems(lambda path, item: arrays.__setitem__(path, item[()]) if isinstance(item, h5py.Dataset)
                          else None)
    return arrays


@pytest.mark.slow
def test_sigkill_mid_epoch_then_the_same_command_ends_where_an_uninterrupted_run_ends(tiny_folder, tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    uninterrupted = _start(_command(tiny_folder, reference))  # runs beside the victim (two cores)
    victim = _start(_command(tiny_folder, killed))
    deadline, seen = time.monotonic() + 900, None
    while time.monotonic() < deadline and victim.poll() is None:
        seen = _manifest(killed)
        if seen and seen["step"] >= STEPS_PER_EPOCH + 2:  # a checkpoint inside the second epoch exists
            break
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    output = victim.communicate(timeout=300)[0]
    assert victim.returncode == -signal.SIGKILL, f"the run ended before it could be killed:\n{output}"
    at_kill = _manifest(killed)
    assert at_kill["step"] < EPOCHS * STEPS_PER_EPOCH
    print(f"killed with the manifest at epoch {at_kill['epoch']}, step {at_kill['step_in_epoch']} of the epoch "
          f"(global step {at_kill['step']})")

    resumed = _start(_command(tiny_folder, killed))  # the very same command
    out = resumed.communicate(timeout=900)[0]
    assert resumed.returncode == 0, out
    assert f"resumed at epoch {at_kill['epoch']}, step {at_kill['optimizer_step']}" in out
    assert uninterrupted.wait(timeout=900) == 0, uninterrupted.communicate()[0]

    ours, theirs = _checkpoint_arrays(killed), _checkpoint_arrays(reference)
    assert sorted(ours) == sorted(theirs) and len(ours) > 20
    worst = max(float(np.max(np.abs(ours[k].astype("float64") - theirs[k].astype("float64")))) for k in ours)
    print(f"max |resumed - uninterrupted| over {len(ours)} weight and optimizer arrays: {worst}")
    assert worst == 0.0
    final, expected = _manifest(killed), _manifest(reference)
    assert final["step"] == expected["step"] == EPOCHS * STEPS_PER_EPOCH
    assert final["history"] == expected["history"]  # the resumed epoch's metrics cover the whole epoch
    assert sorted(os.listdir(killed)) == [".lock", "ckpt-00000018.state.npz", "ckpt-00000018.weights.h5",
                                          "state.json"]


def test_augmentation_is_a_function_of_the_seed_only():
    # crop, flip and RandAugment (one op per image keeps its graph small); erasing and Mixup/CutMix
    # draw through the same stand-in generator and run in the SIGKILL test above
    augment = train_image_augmenter(16, crop_scale=(0.3, 1.0), rand_augment_ops=1, random_erasing=0, seed=0)
    mixing = MixupOrCutMix(0.8, 1.0, seed=0)
    images = np.random.default_rng(0).integers(0, 255, (6, 20, 24, 3)).astype("uint8")
    labels = np.eye(3, dtype="float32")[[0, 1, 2, 0, 1, 2]]

    data = tf.data.Dataset.from_tensor_slices(images).enumerate()
    data = data.map(lambda i, x: augment(x, seed=tf.stack([tf.constant(7, tf.int64), i])), num_parallel_calls=4)
    full = np.stack(list(data.as_numpy_iterator()))
    np.testing.assert_array_equal(full, np.stack(list(data.as_numpy_iterator())))  # no state between passes
    assert len({x.tobytes() for x in full}) == 6 and full.shape == (6, 16, 16, 3)
    # an image's augmentation depends on its own seed only: alone, out of the parallel map, it is the same
    alone = augment(tf.constant(images[4]), seed=tf.constant([7, 4], tf.int64))
    np.testing.assert_array_equal(full[4], alone.numpy())
    batch = tf.constant(full), tf.constant(labels)
    first = [t.numpy() for t in mixing(*batch, seed=tf.constant([1, 2], tf.int64))]
    again = [t.numpy() for t in mixing(*batch, seed=tf.constant([1, 2], tf.int64))]
    other = [t.numpy() for t in mixing(*batch, seed=tf.constant([1, 3], tf.int64))]
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[1], other[1])
    assert not np.array_equal(first[1], labels)  # mixed (prob 1)
