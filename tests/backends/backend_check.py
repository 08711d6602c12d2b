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
        "vgg_cifar": lambda **k: keras_visrec.cifar.CIFARVGG((8, "M", 16, "M", 16), classes=5, name="tiny_vgg"),
    }


def main(workdir):
    backend = keras.backend.backend()
    data = np.load(os.path.join(workdir, "inputs.npz"))
    outputs, report = {}, {"backend": backend}
    for name, build in families().items():
        model = build()
        model.load_weights(os.path.join(workdir, f"{name}.weights.h5"))
        x = data["hrnet"] if name == "hrnet" else data["image"]
        outputs[name] = np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))
    # training with stochastic depth, then .keras save and reload on this backend
    model = families()["convnext"](drop_path_rate=0.3)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 255, (8, 32, 32, 3)).astype("float32"), rng.integers(0, 5, 8)
    history = model.fit(x, y, epochs=2, batch_size=4, verbose=0)
    report["fit_loss"] = [float(v) for v in history.history["loss"]]
    path = os.path.join(workdir, f"{backend}.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    report["reload_max_abs"] = float(np.abs(keras.ops.convert_to_numpy(reloaded(x, training=False))
                                            - keras.ops.convert_to_numpy(model(x, training=False))).max())
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
