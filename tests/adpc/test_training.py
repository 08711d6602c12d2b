"""Training through model.fit: the loss, the schedule, per-exit mIoU, the digit task, strategies."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_visrec.adpc import (AnytimeHRNet, ExitMeanIoU, MultiExitLoss, PolyLR, compile_anytime, evaluate_exits,
                               train_anytime)
from keras_visrec.data.digit_segmentation import DIGIT_SEGMENTATION_CLASSES, load_digit_segmentation


def _numpy_ce(logits, labels, class_weights, ignore=255):
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    valid = labels != ignore
    safe = np.where(valid, labels, 0)
    nll = -np.take_along_axis(logp, safe[..., None], -1)[..., 0]
    w = class_weights[safe] * valid
    return (nll * w).sum() / w.sum()


def test_multi_exit_loss_matches_weighted_cross_entropy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 4, 8, 8, 3)).astype("float32")
    labels = rng.integers(0, 3, (2, 8, 8))
    labels[0, :2] = 255
    class_weights = np.array([0.5, 1.0, 2.0])
    loss = MultiExitLoss(exit_weights=(1, 0.5, 0, 2), class_weights=class_weights)
    ours = float(loss(labels, logits))
    expected = sum(w * _numpy_ce(logits[:, k], labels, class_weights) for k, w in enumerate((1, 0.5, 0, 2)))
    assert abs(ours - expected) < 1e-4
    with pytest.raises(ValueError, match="class_weights"):
        MultiExitLoss(class_weights=(1.0, 2.0))(labels, logits)


def test_logits_are_upsampled_to_the_labels():
    logits = np.zeros((1, 4, 2, 2, 3), "float32")
    logits[..., 1] = 5.0
    labels = np.ones((1, 8, 8), "int32")
    assert float(MultiExitLoss()(labels, logits)) < 4 * 0.02


def test_poly_schedule():
    schedule = PolyLR(0.01, 100, 0.9)
    assert abs(float(schedule(0)) - 0.01) < 1e-9
    assert abs(float(schedule(50)) - 0.01 * 0.5 ** 0.9) < 1e-7
    assert float(schedule(100)) == 0.0 and float(schedule(150)) == 0.0


def test_exit_miou_metric():
    metric = ExitMeanIoU(1, 3)
    logits = np.zeros((1, 4, 2, 2, 3), "float32")
    logits[0, 1, :, :, 0] = 1.0
    logits[0, 1, 0, 0, :] = [0, 0, 1]
    labels = np.array([[[0, 0], [0, 255]]])
    metric.update_state(labels, logits)
    # class 0: hits 2, union 3; class 2: hits 0, union 1; class 1 absent
    assert abs(float(metric.result()) - (2 / 3 + 0) / 2) < 1e-6
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):  # label 7 is neither a class nor 255: never folded
        metric.update_state(np.array([[[0, 7], [1, 255]]]), logits)
    assert metric.exit_index == 1 and metric.num_classes == 3
    assert ExitMeanIoU.from_config(metric.get_config()).get_config() == metric.get_config()


def test_compile_anytime_honours_or_refuses_the_sgd_settings(tiny_config):
    model = AnytimeHRNet(tiny_config, classes=5, exit_width=8, name="tiny")
    compile_anytime(model, base_lr=0.1, power=2.0, momentum=0.5, weight_decay=1e-3, total_steps=10)
    optimizer = model.optimizer
    assert isinstance(optimizer, keras.optimizers.SGD) and optimizer.momentum == 0.5
    assert optimizer.weight_decay == pytest.approx(1e-3)
    schedule = optimizer.learning_rate if isinstance(optimizer.learning_rate, PolyLR) else optimizer._learning_rate
    assert float(schedule(5)) == pytest.approx(0.1 * 0.5 ** 2.0)
    with pytest.raises(ValueError, match=r"\['base_lr', 'momentum'\] would be ignored"):
        compile_anytime(model, optimizer=keras.optimizers.Adam(1e-3), base_lr=0.1, momentum=0.9)
    compile_anytime(model, optimizer=keras.optimizers.Adam(1e-3))
    assert isinstance(model.optimizer, keras.optimizers.Adam)


def test_digit_segmentation_labels_are_exact():
    (x, y), (xt, yt) = load_digit_segmentation(size=64, num_train=16, num_test=4, seed=1)
    assert x.shape == (16, 64, 64, 3) and y.shape == (16, 64, 64) and xt.shape == (4, 64, 64, 3)
    assert y.min() == 0 and y.max() < DIGIT_SEGMENTATION_CLASSES
    background = y == 0
    assert 0.6 < background.mean() < 0.97
    # stroke pixels are brighter than background pixels, per canvas
    assert all(x[i][~background[i]].mean() > x[i][background[i]].mean() + 50 for i in range(16))
    with pytest.raises(ValueError, match="size"):
        load_digit_segmentation(size=16)


def _dataset(x, y, batch):
    return tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=0).batch(batch, drop_remainder=True)


@pytest.mark.slow
def test_fit_under_mirrored_strategy(two_cpu_strategy, tiny_config):
    (x, y), _ = load_digit_segmentation(size=64, num_train=8, num_test=1)
    model, history = train_anytime(
        lambda: AnytimeHRNet(tiny_config, classes=11, exit_width=8, mode="none"), _dataset(x, y, 4),
        epochs=1, strategy=two_cpu_strategy, verbose=0, base_lr=0.01)
    assert model.distribute_strategy is two_cpu_strategy
    assert np.isfinite(history.history["loss"][-1])
    assert set(history.history) >= {f"exit{k}_miou" for k in range(1, 5)}


@pytest.mark.slow
def test_digit_task_accuracy_rises_exit_to_exit_and_masks(tiny_config):
    (x, y), (xt, yt) = load_digit_segmentation(size=64, num_train=256, num_test=48)
    model, _ = train_anytime(
        lambda: AnytimeHRNet(tiny_config, classes=11, exit_type="ee", threshold=0.9, mode="none", bn_momentum=0.9),
        _dataset(x, y, 16), epochs=10, optimizer=keras.optimizers.Adam(5e-3), verbose=0)
    plain = evaluate_exits(model, xt, yt, mode="none", progress=False)
    assert plain.miou[3] > plain.miou[0] + 3.0, plain.table()
    assert plain.miou[2] > plain.miou[0], plain.table()
    masked = evaluate_exits(model, xt, yt, mode="sparse", progress=False)
    assert masked.computed[2] < 0.8, masked.table()  # most pixels skipped in stage 4
    assert masked.gflops[3] < plain.gflops[3]
