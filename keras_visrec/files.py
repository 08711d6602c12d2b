"""Writing files so that a failure never leaves a half-written one behind, and one writer at a time.

Everything keras_visrec saves (models, weights, TFLite files, downloads, reports, plots) goes to a
temporary file in the destination's directory and is renamed over the destination only once
complete; a rename within one directory is atomic, so readers see the old file or the new one.
Work that several processes may start at once (a download into the shared cache, a fine-tuning run
in one output folder) holds :func:`exclusive_lock` on a lock file.
"""

import contextlib
import os
import tempfile
import time

try:  # POSIX; on platforms without it no inter-process lock is taken (see exclusive_lock)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["LockTimeout", "atomic_path", "exclusive_lock", "fsync_path", "write_atomic"]


class LockTimeout(TimeoutError):
    """Another live process held the lock for longer than the caller was willing to wait."""

    def __init__(self, message, holder=None):
        super().__init__(message)
        self.holder = holder


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


def fsync_path(path):
    """Flushes a file (or a directory entry, after a rename) to disk; a no-op where unsupported."""
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. directories on Windows
        return
    try:
        os.fsync(handle)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass
    finally:
        os.close(handle)


def _holder(handle):
    try:
        os.lseek(handle, 0, os.SEEK_SET)
        text = os.read(handle, 64).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:  # pragma: no cover
        return None


@contextlib.contextmanager
def exclusive_lock(path, *, timeout=None, on_wait=None, poll=0.05):
    """Holds an exclusive inter-process lock on ``path`` (created if missing) while the block runs.

    It is an ``fcntl.flock`` on an open file: the kernel drops it when the holder closes the file,
    exits or is killed, so a lock whose process died never blocks anyone — the next caller simply
    gets it. The holder's pid is written into the file for messages. The lock file itself stays
    (removing it would race with a process that has just opened it). Without ``fcntl`` (Windows)
    the block runs unlocked.

    Args:
        path: str. The lock file; its directory must exist.
        timeout: float or None. Seconds to wait for another holder; None waits as long as it
            takes. Defaults to `None`.
        on_wait: callable or None. Called once with the holder's pid (or None) when the lock is
            taken by another process, e.g. to say what we are waiting for. Defaults to `None`.
        poll: float. Seconds between attempts while waiting. Defaults to `0.05`.

    Raises:
        LockTimeout: ``timeout`` passed while another process held the lock.
    """
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        waited = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _holder(handle)
                if not waited and on_wait is not None:
                    on_wait(holder)
                waited = True
                if deadline is not None and time.monotonic() >= deadline:
                    raise LockTimeout(f"{path} is held by process {holder or '(unknown)'}; gave up after "
                                      f"{timeout} s.", holder) from None
                time.sleep(poll)
        os.ftruncate(handle, 0)
        os.lseek(handle, 0, os.SEEK_SET)
        os.write(handle, f"{os.getpid()}\n".encode("ascii"))
        yield
    finally:
        os.close(handle)  # releases the lock
