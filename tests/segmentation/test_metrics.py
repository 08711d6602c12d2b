"""The one confusion matrix (NumPy and Keras) and the pixel cross-entropy, against independent references."""

import numpy as np
import pytest
import tensorflow as tf

from keras_visrec.segmentation.losses import SegmentationLoss, pixel_cross_entropy, upsample_logits
from keras_visrec.segmentation.metrics import ConfusionMatrix, MeanIoU, SegmentationScores, confusion_matrix, mean_iou


def _mmseg_areas(pred, label, classes, ignore=255):
    # mmseg's intersect_and_union accumulated over images, then total_area_to_metrics
    keep = label != ignore
    pred, label = pred[keep], label[keep]
    intersect = pred[pred == label]
    area_i = np.histogram(intersect, bins=classes, range=(0, classes - 1))[0]
    area_p = np.histogram(pred, bins=classes, range=(0, classes - 1))[0]
    area_l = np.histogram(label, bins=classes, range=(0, classes - 1))[0]
    return area_i, area_p + area_l - area_i, area_l


def test_dataset_miou_equals_mmseg_accumulated_areas():
    rng = np.random.default_rng(0)
    classes = 6
    matrix = ConfusionMatrix(classes)
    totals = np.zeros((3, classes))
    for _ in range(4):
        label = rng.integers(0, classes - 1, (20, 30))  # class 5 never labelled
        label[rng.random((20, 30)) < 0.1] = 255
        pred = np.where(rng.random((20, 30)) < 0.6, label, rng.integers(0, classes - 1, (20, 30)))
        pred = np.where(label == 255, rng.integers(0, classes, (20, 30)), pred)
        matrix.update(label, pred)
        totals += np.stack(_mmseg_areas(pred, label, classes))
    scores = matrix.scores()
    with np.errstate(invalid="ignore"):
        iou = totals[0] / totals[1]
    assert scores.miou == pytest.approx(100 * np.nanmean(iou))
    assert scores.pixel_accuracy == pytest.approx(100 * totals[0].sum() / totals[2].sum())
    assert scores.per_class_iou[5] is None  # never labelled nor predicted (predictions on ignored pixels drop)
    assert "mIoU" in scores.table() and len(scores.table().splitlines()) == classes + 2


def test_out_of_range_labels_fail_on_both_paths():
    labels = np.array([[0, 1], [7, 255]])
    with pytest.raises(ValueError, match=r"values \[7\] outside \[0, 3\)"):
        confusion_matrix(labels, np.zeros_like(labels), 3)
    metric = MeanIoU(3)
    logits = np.zeros((1, 2, 2, 3), "float32")
    with pytest.raises(ValueError, match="outside"):
        metric.update_state(labels[None], logits)  # eager
    graph = tf.function(lambda y, p: metric.update_state(y, p))
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels outside"):
        graph(tf.constant(labels[None]), tf.constant(logits))


def test_keras_miou_equals_numpy_miou_on_upsampled_logits():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 4, 4, 3)).astype("float32")
    labels = rng.integers(0, 3, (2, 8, 8))
    labels[0, 0] = 255
    metric = MeanIoU(3)
    metric.update_state(labels, logits)
    predicted = np.asarray(upsample_logits(logits, 8, 8)).argmax(-1)
    assert float(metric.result()) == pytest.approx(mean_iou(confusion_matrix(labels, predicted, 3)), abs=1e-6)


def test_pixel_cross_entropy_is_torch_weighted_mean():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(2, 6, 6, 3)).astype("float32")
    labels = rng.integers(0, 3, (2, 6, 6))
    labels[:, 0] = 255
    weights = np.array([0.5, 1.0, 2.0])
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    valid = labels != 255
    safe = np.where(valid, labels, 0)
    nll = -np.take_along_axis(logp, safe[..., None], -1)[..., 0]
    w = weights[safe] * valid  # torch CrossEntropyLoss(weight, ignore_index=255, reduction="mean")
    expected = (nll * w).sum() / w.sum()
    assert float(pixel_cross_entropy(labels, logits, class_weights=weights)) == pytest.approx(expected, rel=1e-5)
    assert float(SegmentationLoss(weights)(labels, logits)) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="class_weights"):
        pixel_cross_entropy(labels, logits, class_weights=(1.0, 2.0))


def test_scores_from_a_hand_made_matrix():
    scores = SegmentationScores.from_confusion(np.array([[3, 1], [0, 4]]), ("a", "b"))
    assert scores.per_class_iou == pytest.approx([75.0, 80.0])
    assert scores.miou == pytest.approx(77.5) and scores.pixel_accuracy == pytest.approx(87.5)
    assert scores.mean_accuracy == pytest.approx(87.5)
    with pytest.raises(ValueError, match="classes"):
        ConfusionMatrix(0)
