"""keras_visrec.tflite — TFLite / Edge TPU export, the op compatibility report and the LiteRT runtime.

``export_tflite`` (``keras_visrec.tflite.export``) is the package's one TFLite conversion; it and
``load_tflite`` (``keras_visrec.tflite.runtime``) are also available at the top level as
``keras_visrec.export_tflite`` / ``keras_visrec.load_tflite``. ``register_export_rule`` teaches the
exporter a custom layer.
"""

import importlib

__all__ = ["analyze_tflite", "check_edgetpu", "export_tflite", "load_tflite", "parse_compiler_log", "profile_tflite",
           "register_export_rule"]

_LAZY = {
    "export_tflite": "keras_visrec.tflite.export",
    "load_tflite": "keras_visrec.tflite.runtime",
    "analyze_tflite": "keras_visrec.tflite.report",
    "check_edgetpu": "keras_visrec.tflite.edgetpu",
    "parse_compiler_log": "keras_visrec.tflite.edgetpu",
    "profile_tflite": "keras_visrec.tflite.profile",
    "register_export_rule": "keras_visrec.tflite.prepare",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'keras_visrec.tflite' has no attribute {name!r}")
