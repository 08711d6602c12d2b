"""Runs under any ``KERAS_BACKEND``: builds each family tiny, loads shared weights, trains, saves, reloads.

``python backend_check.py WORKDIR`` reads ``WORKDIR/inputs.npz`` and the ``*.weights.h5`` files the
TensorFlow run wrote, and writes ``WORKDIR/<backend>.npz`` (outputs per family) and
``WORKDIR/<backend>.json`` (what else it checked). The test compares backends against each other.
"""

import json
import os
import sys

import keras
import numpy as np

import keras_visrec

TINY_HRNET = dict(stem=16, layer1=(1, 8), stages=((1, (1, 1), (8, 16)), (1, (1, 1, 1), (8, 16, 32)),
                                                (1, (1, 1, 1, 1), (8, 16, 32, 64))))


def _every_third_column(outputs, threshold):
    """A mask that tiny numerical differences cannot flip: every third column is computed again."""
    columns = keras.ops.cast(keras.ops.arange(outputs.shape[2]) % 3 == 0, outputs.dtype)
    return keras.ops.zeros_like(outputs[..., 0]) + columns[None, None, :]


def families():
    """name -> builder of a tiny model of that family (the same on every backend)."""
    return {
        "convnext": lambda **k: keras_visrec.ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), input_shape=(32, 32, 3),
                                                      classes=5, layer_scale_init_value=0.5, name="tiny_v1", **k),
        "convnext_v2": lambda **k: keras_visrec.ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), use_grn=True,
                                                         layer_scale_init_value=None, input_shape=(32, 32, 3),
                                                         classes=5, name="tiny_v2", **k),
        "convnext_isotropic": lambda **k: keras_visrec.ConvNeXt(depths=(2,), dims=(16,), isotropic=True,
                                                                input_shape=(32, 32, 3), classes=5, name="tiny_iso", **k),
        "hrnet": lambda **k: keras_visrec.HRNetV2(TINY_HRNET, classes=5, input_shape=(64, 64, 3), name="tiny_hrnet"),
        "resnet_cifar": lambda **k: keras_visrec.ResNet56CIFAR(classes=5, name="tiny_resnet"),
        "vgg_cifar": lambda **k: keras_visrec.VGGCIFAR((8, "M", 16, "M", 16), classes=5, name="tiny_vgg"),
        "adpc": lambda **k: keras_visrec.adpc.AnytimeHRNet(TINY_HRNET, classes=5, exit_width=8, mask_fn=_every_third_column,
                                                           input_shape=(64, 64, 3), name="tiny_adpc"),
        "upernet": lambda **k: keras_visrec.UperNet(backbone=dict(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32)), classes=5,
                                                    input_shape=(32, 32, 3), channels=16, aux_channels=8,
                                                    name="tiny_upernet", **k),
    }


def _numpy(value):
    return np.asarray(keras.ops.convert_to_numpy(value))


def _outputs(model, x):
    """name suffix -> output array (UperNet has logits and auxiliary logits)."""
    result = model(x, training=False)
    if isinstance(result, (list, tuple)):
        return {f"_{i}": _numpy(r) for i, r in enumerate(result)}
    return {"": _numpy(result)}


def _fit_save_reload(model, x, y, workdir, tag):
    """Two epochs of fit, then a .keras round trip; returns (losses, reload max |diff|)."""
    history = model.fit(x, y, epochs=2, batch_size=4, verbose=0)
    path = os.path.join(workdir, f"{keras.backend.backend()}_{tag}.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    before, after = _outputs(model, x[:2] if not isinstance(x, dict) else x), _outputs(reloaded, x[:2])
    return ([float(v) for v in history.history["loss"]],
            max(float(np.abs(before[k] - after[k]).max()) for k in before))


def _fit_families(report, workdir):
    """ConvNeXt and UperNet through fit with the recipes' optimizers, then a .keras round trip."""
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 255, (8, 32, 32, 3)).astype("float32"), rng.integers(0, 5, 8)
    # ConvNeXt with stochastic depth and the recipe's optimizer (AdamW + layer decay, warmup-cosine)
    from keras_visrec.recipe.optim import convnext_adamw
    from keras_visrec.recipe.schedule import WarmupCosine

    model = families()["convnext"](drop_path_rate=0.3)
    model.compile(optimizer=convnext_adamw(model, WarmupCosine(1e-3, total_steps=4, warmup_steps=1), layer_decay=0.8),
                  loss="sparse_categorical_crossentropy")
    report["fit_loss"], report["reload_max_abs"] = _fit_save_reload(model, x, y, workdir, "convnext")
    # UperNet with the official segmentation recipe (aux loss 0.4, layer-decay AdamW, poly warmup)
    from keras_visrec.segmentation.training import compile_segmenter

    model = families()["upernet"](drop_path_rate=0.2)
    compile_segmenter(model, total_steps=4, warmup_steps=1, learning_rate=1e-3)
    masks = rng.integers(0, 5, (8, 32, 32)).astype("int32")
    report["upernet_fit_loss"], report["upernet_reload_max_abs"] = _fit_save_reload(
        model, x, (masks, masks), workdir, "upernet")


def main(workdir, fit=True):
    """Writes ``<backend>.npz`` (every output) and ``<backend>.json``; ``fit=False`` leaves out the training
    runs (the TensorFlow reference: its ``fit`` is tested by the families' own tests)."""
    backend = keras.backend.backend()
    data = np.load(os.path.join(workdir, "inputs.npz"))
    outputs, report = {}, {"backend": backend}
    for name, build in families().items():
        model = build()
        x = data["hrnet"] if name in ("hrnet", "adpc") else data["image"]
        if name == "adpc":
            model(x)  # a subclassed model: built by a call
        model.load_weights(os.path.join(workdir, f"{name}.weights.h5"))
        if name == "adpc":  # unmasked, then ADP-C's dense-simulated masking (the sparse mode is TensorFlow's)
            for mode in ("none", "dense"):
                outputs.update({f"adpc_{mode}_exit_{i}": _numpy(o) for i, o in enumerate(model.anytime(x, mode=mode))})
            report["adpc_computed"] = [share for segment in model.computed_fractions()
                                       for _, share in sorted(segment.items())]
            continue
        outputs.update({name + suffix: value for suffix, value in _outputs(model, x).items()})
        if name == "vgg_cifar":  # the pruning surgery: L1-norm filter pruning picks the same filters
            pruned, _ = keras_visrec.pruning.l1_prune(model, ratio=0.5)
            outputs["vgg_cifar_l1_pruned"] = _numpy(pruned(x, training=False))
    if fit:
        _fit_families(report, workdir)
    # weights= from a PyTorch file and a .keras file, read without torch on any backend
    for key, path in (("pth", "official.pth"), ("keras", "tensorflow.keras")):
        if os.path.exists(os.path.join(workdir, path)):
            loaded = keras_visrec.ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), input_shape=(32, 32, 3),
                                           classes=5, layer_scale_init_value=0.5, name="tiny_v1",
                                           weights=os.path.join(workdir, path))
            outputs[f"weights_{key}"] = np.asarray(keras.ops.convert_to_numpy(loaded(data["image"], training=False)))
    report["torch_imported_by_reader"] = "torch" in sys.modules and backend != "torch"
    np.savez(os.path.join(workdir, f"{backend}.npz"), **outputs)
    with open(os.path.join(workdir, f"{backend}.json"), "w") as handle:
        json.dump(report, handle)


if __name__ == "__main__":
    main(sys.argv[1])
