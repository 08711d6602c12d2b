"""What ``import keras_visrec`` does before TensorFlow loads (kept apart: it must import nothing heavy).

* TensorFlow's oneDNN rewrites are turned on unless the user chose (``TF_ENABLE_ONEDNN_OPTS``).
* Run as the ``keras-visrec`` command without ``--verbose``, TensorFlow's C++ start-up lines (the
  oneDNN banner, CUDA probing, absl's pre-init warning) are kept off the terminal: they are written
  to file descriptor 2 by native code before any Python logging setting applies.
"""

import contextlib
import os
import sys

__all__ = ["invoked_as_cli", "native_stderr_silenced"]


def invoked_as_cli():
    """Whether this process is ``keras-visrec …`` / ``python -m keras_visrec …`` without ``--verbose``."""
    argv = list(getattr(sys, "orig_argv", sys.argv))
    script = os.path.basename(sys.argv[0]) if sys.argv else ""
    as_module = any(a == "-m" and b in ("keras_visrec", "keras_visrec.cli") for a, b in zip(argv, argv[1:]))
    return (as_module or script == "keras-visrec") and "--verbose" not in argv


@contextlib.contextmanager
def native_stderr_silenced(enabled=True):
    """Points file descriptor 2 at /dev/null while the block runs (Python exceptions still show afterwards)."""
    if not enabled:
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
