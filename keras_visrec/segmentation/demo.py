"""The segmentation demo, offline end to end: a small UperNet on the digit canvases.

``keras-visrec seg-demo`` (``make demo-seg``): train a UperNet on a tiny ConvNeXt with the
official recipe's machinery (pixel cross-entropy + auxiliary loss at 0.4, AdamW with stage-wise
decay 0.9, warmup then poly decay, drop path, the mmseg augmentation pipeline), evaluate mIoU on
held-out canvases, save a ``.keras`` file and reload it, write a colour overlay PNG of one
prediction, and export the inference model to TFLite (fp32) and report its agreement with Keras.

The digit task (:mod:`keras_visrec.data.digit_segmentation`) is set to fit a CI minute on two
CPU cores, and the settings differ from ADE20K's where the task does: 32×32 canvases with one
digit (20–28 px) each, crop 32, rescale by the ratio alone (0.75–1.25), no flips (digits are not
mirror-symmetric), background weighed 0.2 in the loss (it covers ~80 % of the pixels), no head
dropout, and AdamW at 1.5e-2 since nothing is pretrained (the recipe's 1e-4 fine-tunes an
ImageNet backbone; from scratch, rates below ~1e-2 leave this small UperNet predicting background
for the whole run). Stage-wise decay 0.9, warmup (one epoch) + poly, drop path 0.1 and the
auxiliary loss at 0.4 stay as the recipe has them.
"""

import os
import time

from keras_visrec.segmentation.datasets import DIGIT_TASK

__all__ = ["DEMO_BACKBONE", "build_demo_upernet", "digit_augment", "run_seg_demo",
           "train_digit_segmenter"]

DEMO_BACKBONE = dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64))
BACKGROUND_WEIGHT = 0.2
_DEMO_EPOCHS = 12


def build_demo_upernet(classes=11, input_shape=(32, 32, 3), auxiliary=True, drop_path_rate=0.1, channels=32):
    """The demo's UperNet: a tiny ConvNeXt backbone (depths 1,1,1,1, dims 8–64), a 32-channel UPerHead."""
    from keras_visrec.upernet import UperNet

    return UperNet(backbone=dict(DEMO_BACKBONE), classes=classes, input_shape=input_shape, auxiliary=auxiliary,
                   drop_path_rate=drop_path_rate, channels=channels, aux_channels=channels // 2, dropout=0.0)


def digit_augment(size=DIGIT_TASK["size"]):
    """mmseg's training pipeline set for the digit canvases (see the module docstring)."""
    from keras_visrec.segmentation.pipeline import TrainAugment

    return TrainAugment(crop_size=size, scale=None, ratio_range=(0.75, 1.25), flip_prob=0.0)


def train_digit_segmenter(*, epochs=_DEMO_EPOCHS, batch_size=16, learning_rate=1.5e-2, num_train=512, num_test=128,
                          seed=0, strategy=None, build_model=None, verbose=0):
    """Trains a segmenter on the digit canvases; returns ``(model, (x_test, y_test), history)``.

    Args:
        epochs: int. Defaults to `12`.
        batch_size: int. Global batch size. Defaults to `16`.
        learning_rate: float. Peak AdamW rate (warmup over the first epoch, then poly decay).
            Defaults to `1.5e-2`.
        num_train, num_test: int. Canvases (:data:`DIGIT_TASK`). Defaults to `512`, `128`.
        seed: int. Data, augmentation and initialisation seed. Defaults to `0`.
        strategy: `None`, ``"mirrored"``, ``"multiworker"`` or a ``tf.distribute.Strategy``.
        build_model: callable ``(input_shape=…, classes=…) → model`` or `None` for
            :func:`build_demo_upernet`.
        verbose: ``fit`` verbosity. Defaults to `0`.
    """
    import keras

    from keras_visrec.data.digit_segmentation import DIGIT_SEGMENTATION_CLASSES, load_digit_segmentation
    from keras_visrec.segmentation.pipeline import train_dataset
    from keras_visrec.segmentation.training import train_segmenter

    keras.utils.set_random_seed(seed)
    size = DIGIT_TASK["size"]
    (x, y), test = load_digit_segmentation(num_train=num_train, num_test=num_test, seed=seed, **DIGIT_TASK)
    build = build_model or build_demo_upernet
    data = train_dataset((x, y), batch_size, augment=digit_augment(size), seed=seed)
    steps = int(data.cardinality())
    class_weights = (BACKGROUND_WEIGHT,) + (1.0,) * (DIGIT_SEGMENTATION_CLASSES - 1)
    model, history = train_segmenter(
        lambda: build(input_shape=(size, size, 3), classes=DIGIT_SEGMENTATION_CLASSES), data, epochs=epochs,
        strategy=strategy, verbose=verbose, learning_rate=learning_rate, warmup_steps=steps,
        class_weights=class_weights)
    return model, test, history


def _agreement(model, runner, images):
    import numpy as np

    keras_logits = np.asarray(model.predict(images, verbose=0))
    tflite_logits = np.concatenate([runner.predict(image[None]) for image in images])
    same = float((keras_logits.argmax(-1) == tflite_logits.argmax(-1)).mean())
    return float(np.abs(keras_logits - tflite_logits).max()), same


def run_seg_demo(*, output_dir="out/seg-demo", epochs=None, export=True, strategy=None, seed=0, verbose=1,
                 build_model=None):
    """Runs the demo and returns a dict of the figures it printed.

    Args:
        output_dir: str. Where the ``.keras``, PNG and ``.tflite`` files go. Defaults to `"out/seg-demo"`.
        epochs: int or None. Training epochs; `None`: the tuned default.
        export: bool. Export to TFLite and compare. Defaults to `True`.
        strategy: a strategy for training (see :func:`train_digit_segmenter`).
        seed: int. Defaults to `0`.
        verbose: int. 0 prints the results only. Defaults to `1`.
        build_model: see :func:`train_digit_segmenter`.
    """
    import keras
    import numpy as np

    from keras_visrec.files import atomic_path
    from keras_visrec.data.digit_segmentation import DIGIT_SEGMENTATION_CLASSES
    from keras_visrec.segmentation.datasets import DIGIT_CLASS_NAMES, source_from_arrays
    from keras_visrec.segmentation.evaluate import evaluate_segmentation
    from keras_visrec.segmentation.inference import inference_model, predict_labels
    from keras_visrec.segmentation.visualize import overlay, write_png

    start = time.time()
    results = {}
    print("== 1. Train a small UperNet on the digit canvases (32×32, 11 classes) with the official recipe")
    model, (x_test, y_test), _ = train_digit_segmenter(epochs=epochs or _DEMO_EPOCHS, seed=seed, strategy=strategy,
                                                       build_model=build_model, verbose=(0, 2, 1)[min(verbose, 2)])
    net = inference_model(model)
    print(f"params: {model.count_params():,} (inference model {net.count_params():,})")

    print("== 2. Evaluate on held-out canvases (whole image, as mmseg's whole mode)")
    source = source_from_arrays(x_test, y_test, DIGIT_SEGMENTATION_CLASSES, DIGIT_CLASS_NAMES, "digit canvases [test]")
    evaluation = evaluate_segmentation(net, source, mode="whole", progress=verbose > 0)
    print(evaluation.summary())
    results["miou"] = evaluation.scores.miou
    results["pixel_accuracy"] = evaluation.scores.pixel_accuracy

    print("== 3. Save as .keras and load it back")
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "upernet_digits.keras")
    with atomic_path(path) as temporary:
        net.save(temporary)
    reloaded = keras.saving.load_model(path, compile=False)
    same = bool(np.allclose(net.predict(x_test[:16], verbose=0), reloaded.predict(x_test[:16], verbose=0), atol=1e-5))
    print(f"saved {path} ({os.path.getsize(path) / 2**20:.2f} MiB); reloaded outputs identical: {same}")
    results["reload_identical"] = same

    print("== 4. Predict one canvas and write its colour overlay")
    labels = predict_labels(reloaded, x_test[0], mode="whole")
    overlay_path = write_png(os.path.join(output_dir, "overlay.png"), overlay(x_test[0], labels, DIGIT_SEGMENTATION_CLASSES))
    write_png(os.path.join(output_dir, "image.png"), x_test[0].astype("uint8"))
    accuracy = float((labels == y_test[0]).mean())
    print(f"wrote {overlay_path} (pixel accuracy on this canvas {100 * accuracy:.1f} %)")
    results["overlay"] = overlay_path

    if export:
        results.update(_export(net, output_dir, x_test))
    print(f"seg-demo finished in {time.time() - start:.0f} s")
    return results


def _export(net, output_dir, x_test):
    import keras_visrec
    from keras_visrec.tflite.runtime import load_tflite

    print("== 5. Export the inference model to TFLite (fp32) and compare with Keras")
    path = os.path.join(output_dir, "upernet_digits_fp32.tflite")
    keras_visrec.export_tflite(net, path, quantization="fp32", validation_data=x_test[:8])
    runner = load_tflite(path, num_threads=2)
    max_abs, same = _agreement(net, runner, x_test[:16])
    print(f"{path}: {os.path.getsize(path) / 1024:.0f} KiB; logits max |Keras − TFLite| {max_abs:.2e}, "
          f"same class on {100 * same:.2f} % of pixels")
    return {"tflite_max_abs": max_abs, "tflite_same_class": same, "tflite": path}
