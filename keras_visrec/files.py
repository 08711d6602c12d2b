"""Writing files so that a failure never leaves a half-written one behind.

Everything keras_visrec saves (models, weights, TFLite files, downloads, reports, plots) goes to a
temporary file in the destination's directory and is renamed over the destination only once
complete; a rename within one directory is atomic, so readers see the old file or the new one.
"""

import contextlib
import os
import tempfile

__all__ = ["atomic_path", "write_atomic"]


def _suffix(path):
    # keep every extension (".weights.h5", ".keras", ".png"): savers pick the format from it
    name = os.path.basename(path)
    return name[name.index("."):] if "." in name.lstrip(".") else ""


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside ``path``; it replaces ``path`` on success, is removed on failure.

    Args:
        path: destination file. Its directory must exist.
    """
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"Output directory does not exist: {directory!r} (for {path!r}).")
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=_suffix(path))
    os.close(handle)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_atomic(path, data):
    """Writes ``data`` (bytes, or str as UTF-8) to ``path`` atomically."""
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as handle:
            handle.write(data if isinstance(data, bytes) else data.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
