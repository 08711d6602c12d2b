"""Download into a cache directory: sha256-verified, atomic, with a progress bar.

The cache is ``$KERAS_VISREC_CACHE`` when set, else ``$XDG_CACHE_HOME/keras_visrec`` (default
``~/.cache/keras_visrec``). A file is written to a temporary name in the cache and moved into
place with ``os.replace`` only once it is complete and its hash matches, so no failure (HTTP
error, cut connection, wrong hash, Ctrl-C) leaves a half-written file under the final name.
"""

import hashlib
import http.client
import os
import urllib.error
import urllib.request

from keras_visrec.files import atomic_path

__all__ = ["CACHE_ENV", "UNVERIFIED_ENV", "DownloadError", "cache_dir", "download", "sha256_file"]

CACHE_ENV = "KERAS_VISREC_CACHE"
UNVERIFIED_ENV = "KERAS_VISREC_ALLOW_UNVERIFIED"
_CHUNK = 1 << 20


class DownloadError(OSError):
    """A download that failed or whose content does not match its published hash."""


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


def download(url, sha256=None, *, filename=None, directory=None, allow_unverified=False, progress=True,
             timeout=60):
    """Returns the local path of ``url``, downloading it into the cache when needed.

    Args:
        url: str. http(s) or file URL.
        sha256: str or None. Expected hex digest. A cached file is re-checked on every call
            (a corrupted one is removed and fetched again); a fresh download that does not
            match is removed and raises.
        filename: str. Name in the cache. Defaults to the URL's last component.
        directory: str. Cache directory. Defaults to :func:`cache_dir`.
        allow_unverified: bool. Accept a file without a published hash (also enabled by the
            environment variable ``KERAS_VISREC_ALLOW_UNVERIFIED=1``). Defaults to `False`.
        progress: bool. Show a tqdm progress bar. Defaults to `True`.
        timeout: float. Socket timeout in seconds. Defaults to `60`.

    Raises:
        ValueError: ``sha256`` is None and unverified files were not allowed.
        DownloadError: HTTP error, connection cut short, or hash mismatch.
    """
    if sha256 is None and not _unverified_allowed(allow_unverified):
        raise ValueError(
            f"No published sha256 for {url}; refusing to trust it silently. Pass allow_unverified=True "
            f"(keras_visrec.zoo.fetch_weights(..., allow_unverified=True)) or set {UNVERIFIED_ENV}=1 to "
            "download it anyway."
        )
    directory = directory or cache_dir()
    os.makedirs(directory, exist_ok=True)
    target = os.path.join(directory, filename or url.rsplit("/", 1)[-1])
    if os.path.isfile(target):
        if sha256 is None or sha256_file(target) == sha256.lower():
            return target
        os.remove(target)  # corrupted or stale cache entry: fetch it again
    _fetch(url, target, sha256, progress=progress, timeout=timeout)
    return target


def _fetch(url, target, sha256, *, progress, timeout):
    digest = hashlib.sha256()
    with atomic_path(target) as partial:
        with open(partial, "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 (user/catalogue URL)
            except urllib.error.HTTPError as error:
                raise DownloadError(f"Download of {url} failed: HTTP {error.code} {error.reason}.") from None
            except (urllib.error.URLError, OSError) as error:
                raise DownloadError(f"Download of {url} failed: {error}.") from None
            with response:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                received = _copy(response, out, digest, total, url, progress)
        if total is not None and received != total:
            raise DownloadError(f"Download of {url} was cut short: {received} of {total} bytes received.")
        actual = digest.hexdigest()
        if sha256 is not None and actual != sha256.lower():
            raise DownloadError(
                f"sha256 mismatch for {url}: expected {sha256.lower()}, got {actual}; the file was removed."
            )
        if sha256 is None:
            print(f"keras_visrec: downloaded {url} without a published hash; its sha256 is {actual}.")


def _copy(response, out, digest, total, url, progress):
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=url.rsplit("/", 1)[-1], leave=False)
    received = 0
    try:
        while True:
            try:
                chunk = response.read(_CHUNK)
            except (OSError, http.client.HTTPException) as error:  # e.g. IncompleteRead, reset
                raise DownloadError(f"Download of {url} was cut short after {received} bytes: {error!r}.") from None
            if not chunk:
                return received
            out.write(chunk)
            digest.update(chunk)
            received += len(chunk)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
