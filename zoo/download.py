"""Download into a cache directory: verified, resumable, safe under crashes and concurrency.

The cache is ``$KERAS_VISREC_CACHE`` when set, else ``$XDG_CACHE_HOME/keras_visrec`` (default
``~/.cache/keras_visrec``). It holds::

    {name}                          finished, verified files: the only files under a final name
    .downloads/{name}.lock          the inter-process lock for {name}
    .downloads/{name}.part          the bytes received so far
    .downloads/{name}.part.json     where they came from: url, validator (ETag / Last-Modified), size

* **Once, whoever asks.** A process downloading ``{name}`` holds an exclusive lock
  (:func:`keras_visrec.files.exclusive_lock`, an ``fcntl.flock``); others asking for it at the same
  time wait, then find the finished file. The kernel drops the lock of a process that dies, so a
  lock left by a killed download is recovered by the next caller.
* **Resumed, never trusted.** A transfer cut short keeps its ``.part``; the next call asks for the
  rest (``Range: bytes=N-``, with ``If-Range`` when the server gave a validator). A ``206`` whose
  ``Content-Range`` starts at ``N`` is appended; a ``200`` (a server that ignores ``Range``, or a
  file that changed) starts again from byte 0; a ``416`` means the part may already be whole and is
  checked. The sha256 always covers the whole file (the kept part is re-read), and a resumed file
  that fails it is fetched once more from scratch. Without a published hash and without a
  validator a ``.part`` is not resumed: nothing could tell two versions of the file apart.
* **Nothing half-written under a final name.** A file moves from ``.part`` to its name with
  ``os.replace`` only once complete and verified, so no failure (HTTP error, cut connection, wrong
  hash, Ctrl-C, SIGKILL) leaves something a later call mistakes for a finished file.
* **sha256 prefixes** (torch.hub's ``check_hash``): files named ``name-<hex>.pth`` carry the first
  hex digits of their sha256; ``sha256_prefix`` checks them. It is a *prefix* check — 8 hex digits
  are 32 bits, enough to catch corruption, not to authenticate — so it does not count as a
  published hash: such files still need the explicit unverified opt-in.
"""

import hashlib
import http.client
import json
import os
import re
import sys
import urllib.error
import urllib.request

from keras_visrec.files import LockTimeout, exclusive_lock, fsync_path, write_atomic

__all__ = ["CACHE_ENV", "UNVERIFIED_ENV", "DownloadError", "cache_dir", "check_sha256_prefix", "download",
           "sha256_file"]

CACHE_ENV = "KERAS_VISREC_CACHE"
UNVERIFIED_ENV = "KERAS_VISREC_ALLOW_UNVERIFIED"
WORK_DIR = ".downloads"
_CHUNK = 1 << 20
_HEX = re.compile(r"[0-9a-f]+")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class DownloadError(OSError):
    """A download that failed or whose content does not match its published hash."""


class _Restart(Exception):
    """The kept part cannot be continued: start from byte 0 (carries the reason)."""


def cache_dir():
    """The weights cache directory (created on first use)."""
    path = os.environ.get(CACHE_ENV)
    if not path:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        path = os.path.join(base, "keras_visrec")
    os.makedirs(path, exist_ok=True)
    return path


def sha256_file(path):
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _unverified_allowed(allow_unverified):
    return allow_unverified or os.environ.get(UNVERIFIED_ENV, "").strip().lower() in ("1", "true", "yes")


def _normalise_hex(value, argument, length=None):
    if value is None:
        return None
    text = str(value).strip().lower()
    if not _HEX.fullmatch(text) or (length is not None and len(text) != length) or len(text) > 64:
        need = f"{length} hex digits" if length else "1 to 64 hex digits"
        raise ValueError(f"`{argument}` must be {need}; received {argument}={value!r}.")
    return text


def check_sha256_prefix(digest, prefix, *, what):
    """Raises DownloadError unless the hex ``digest`` starts with ``prefix`` (torch.hub's check)."""
    if prefix is not None and not digest.startswith(prefix):
        raise DownloadError(f"sha256 prefix mismatch for {what}: the file name promises {prefix}…, the file's "
                            f"sha256 is {digest}; the file was removed.")


def _verified(path, sha256, prefix):
    """Whether a finished file matches what is known of it (nothing known: it is accepted)."""
    if sha256 is None and prefix is None:
        return True
    digest = sha256_file(path)
    return digest == sha256 if sha256 is not None else digest.startswith(prefix)


def download(url, sha256=None, *, filename=None, directory=None, allow_unverified=False, progress=True,
             timeout=60, sha256_prefix=None, lock_timeout=None):
    """Returns the local path of ``url``, downloading it into the cache when needed.

    Args:
        url: str. http(s) or file URL.
        sha256: str or None. Expected hex digest. A cached file is re-checked on every call
            (a corrupted one is removed and fetched again); a download that does not match is
            removed and raises.
        filename: str. Name in the cache (a plain file name). Defaults to the URL's last component.
        directory: str. Cache directory. Defaults to :func:`cache_dir`.
        allow_unverified: bool. Accept a file without a published hash (also enabled by the
            environment variable ``KERAS_VISREC_ALLOW_UNVERIFIED=1``). Defaults to `False`.
        progress: bool. Show a tqdm progress bar. Defaults to `True`.
        timeout: float. Socket timeout in seconds. Defaults to `60`.
        sha256_prefix: str or None. Hex prefix of the sha256 the file name carries (torch.hub's
            convention): checked, but weaker than ``sha256`` and not counted as verification.
            Defaults to `None`.
        lock_timeout: float or None. Seconds to wait for another process downloading the same
            file; None waits until it is done. Defaults to `None`.

    Raises:
        ValueError: bad arguments, or ``sha256`` is None and unverified files were not allowed.
        DownloadError: HTTP error, connection cut short (the bytes received are kept and the next
            call resumes), hash mismatch, or ``lock_timeout`` passed.
    """
    sha256 = _normalise_hex(sha256, "sha256", 64)
    sha256_prefix = _normalise_hex(sha256_prefix, "sha256_prefix")
    if sha256 is not None and sha256_prefix is not None and not sha256.startswith(sha256_prefix):
        raise ValueError(f"`sha256_prefix`={sha256_prefix!r} contradicts `sha256`={sha256!r} for {url}.")
    if sha256 is None and not _unverified_allowed(allow_unverified):
        weaker = f" (only the name's sha256 prefix {sha256_prefix} is known)" if sha256_prefix else ""
        raise ValueError(
            f"No published sha256 for {url}{weaker}; refusing to trust it silently. Pass allow_unverified=True "
            f"(keras_visrec.zoo.fetch_weights(..., allow_unverified=True)) or set {UNVERIFIED_ENV}=1 to "
            "download it anyway."
        )
    name = filename or url.rsplit("/", 1)[-1]
    if not name or name in (".", "..") or "/" in name or os.sep in name or name.startswith("."):
        raise ValueError(f"`filename` must be a plain file name; received {name!r} (from {url!r}).")
    directory = directory or cache_dir()
    work = os.path.join(directory, WORK_DIR)
    os.makedirs(work, exist_ok=True)
    target = os.path.join(directory, name)
    if os.path.isfile(target) and _verified(target, sha256, sha256_prefix):
        return target  # finished files appear atomically: no lock needed to read one

    def waiting(holder):
        print(f"keras_visrec: waiting for process {holder or '(unknown)'}, which is downloading {name} into "
              f"{directory}.", file=sys.stderr)

    try:
        with exclusive_lock(os.path.join(work, name + ".lock"), timeout=lock_timeout, on_wait=waiting):
            if os.path.isfile(target):
                if _verified(target, sha256, sha256_prefix):
                    return target  # another process finished it while we waited
                os.remove(target)  # corrupted or stale cache entry: fetch it again
            _fetch(url, target, os.path.join(work, name + ".part"), sha256, sha256_prefix, progress=progress,
                   timeout=timeout)
    except LockTimeout as error:
        raise DownloadError(f"Download of {url}: {error}") from None
    return target


def _read_meta(path):
    try:
        with open(path, encoding="utf-8") as handle:
            meta = json.load(handle)
        return meta if isinstance(meta, dict) else None
    except (OSError, ValueError):
        return None


def _discard(*paths):
    for path in paths:
        if os.path.exists(path):
            os.remove(path)


def _fetch(url, target, part, sha256, prefix, *, progress, timeout):
    """Fills ``part`` (resuming it when possible), verifies the whole file, renames it to ``target``."""
    meta_path = part + ".json"
    for attempt in (0, 1):
        kept = attempt == 0 and os.path.isfile(part) and os.path.getsize(part) > 0
        try:
            _transfer(url, part, meta_path, sha256, allow_resume=attempt == 0, progress=progress, timeout=timeout)
            digest = sha256_file(part)
            if sha256 is not None and digest != sha256:
                raise _Restart(f"sha256 mismatch for {url}: expected {sha256}, got {digest}")
            try:
                check_sha256_prefix(digest, prefix, what=url)
            except DownloadError as error:
                raise _Restart(str(error)) from None
        except _Restart as reason:
            _discard(part, meta_path)
            if kept:
                continue  # the bytes kept from an earlier call may be stale: once more from byte 0
            raise DownloadError(f"{reason}; the file was removed.") from None
        os.replace(part, target)
        fsync_path(os.path.dirname(target))
        _discard(meta_path)
        if sha256 is None:
            print(f"keras_visrec: downloaded {url} without a published hash; its sha256 is {digest}.")
        return


def _transfer(url, part, meta_path, sha256, *, allow_resume, progress, timeout):
    """Downloads into ``part``, continuing the bytes an earlier call kept when that is safe."""
    meta = _read_meta(meta_path) if allow_resume else None
    offset = os.path.getsize(part) if os.path.exists(part) else 0
    validator = (meta or {}).get("validator")
    resumable = offset > 0 and meta is not None and meta.get("url") == url and (sha256 is not None or validator)
    if not resumable:
        _discard(part, meta_path)
        offset = 0
    headers = {}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if validator:
            headers["If-Range"] = validator
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),  # noqa: S310
                                          timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # nothing after byte `offset`: the part may be whole already
            if meta.get("size") in (None, offset):
                return
            raise _Restart(f"the server has no bytes after {offset} of the {meta['size']} it announced") from None
        raise DownloadError(f"Download of {url} failed: HTTP {error.code} {error.reason}.") from None
    except (urllib.error.URLError, OSError) as error:
        raise DownloadError(f"Download of {url} failed: {error}.") from None
    with response:
        status = getattr(response, "status", None) or response.getcode()
        total = None
        if offset and status == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
            if not match or int(match[1]) != offset:
                raise _Restart(f"the server answered Range bytes={offset}- with Content-Range "
                               f"{response.headers.get('Content-Range')!r}")
            total = int(match[3]) if match[3] != "*" else None
        else:  # 200: a fresh start (or a server that ignores Range / a changed file)
            offset = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
            write_atomic(meta_path, json.dumps({"url": url, "validator": validator, "size": total}))
        with open(part, "ab" if offset else "wb") as out:
            received = _copy(response, out, total, offset, url, progress)
            out.flush()
            os.fsync(out.fileno())
    if total is not None and received != total:
        raise DownloadError(f"Download of {url} was cut short: {received} of {total} bytes received; they are "
                            f"kept in {part} and the next call resumes.")
    return offset > 0


def _copy(response, out, total, offset, url, progress):
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=url.rsplit("/", 1)[-1], leave=False)
    received = offset
    try:
        while True:
            try:
                chunk = response.read(_CHUNK)
            except (OSError, http.client.HTTPException) as error:  # e.g. IncompleteRead, reset
                out.flush()
                raise DownloadError(f"Download of {url} was cut short after {received} bytes ({error!r}); they "
                                    "are kept and the next call resumes.") from None
            if not chunk:
                return received
            out.write(chunk)
            received += len(chunk)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
