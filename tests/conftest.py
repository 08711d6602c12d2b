"""Test-session set-up shared by every test module.

* The CPU is split into two logical devices *before* TensorFlow initialises, so tests can run
  ``fit`` under ``MirroredStrategy`` over two devices (fixture ``two_cpu_strategy``).
* Seeds are fixed per test; nothing touches the network.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
except RuntimeError:  # TensorFlow already initialised by a plugin: two devices unavailable
    pass

import keras  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    # No clear_session() here: it costs ~0.7 s per test on this CPU and Keras 3 keeps no
    # global graph on the TensorFlow backend; tests that need fresh layer names clear it.
    keras.utils.set_random_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def two_cpu_strategy():
    """A MirroredStrategy over two logical CPU devices, one per process.

    Session-scoped: several MirroredStrategy instances in one process hand out colliding
    collective instance keys ("Shape mismatch in the collective instance 100").
    """
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(devices) < 2:
        pytest.skip("two logical CPU devices could not be configured in this process")
    return tf.distribute.MirroredStrategy(devices[:2])


@pytest.fixture(scope="session")
def digits32():
    """scikit-learn's digits as 32×32 RGB 0–255 images: ((x_train, y_train), (x_test, y_test))."""
    from keras_visrec.data import load_digits_images

    return load_digits_images(size=32)


@pytest.fixture
def onednn_rewrites(monkeypatch):
    """As in a process where ``import keras_visrec`` came first (or on CPUs where TensorFlow turns them on by
    default, e.g. with AVX512_VNNI / AMX): TensorFlow rewrites convs to oneDNN, so ``layers.Conv2D`` takes
    TensorFlow's generic ``Conv`` op — every conv, as on an AVX2 CPU (pinned here; on AVX-512 CPUs the narrow ones
    stay on oneDNN). The suite imports TensorFlow first, which leaves them off elsewhere."""
    from keras_visrec.layers import conv

    conv._onednn_on_cpu_only.cache_clear()
    from tensorflow.python.util import _pywrap_util_port

    monkeypatch.setattr(_pywrap_util_port, "IsMklEnabled", lambda: True)
    monkeypatch.setattr(conv, "_cpu_has_avx512", lambda: False)  # an AVX2 CPU: every conv takes the generic op
    yield
    conv._onednn_on_cpu_only.cache_clear()
