"""keras_visrec.zoo — the weights catalogue as data, its typed loader, download and cache.

>>> from keras_visrec import zoo
>>> zoo.list_weights("convnext_tiny.*")[:2]
['convnext_tiny.fb_in1k', 'convnext_tiny.fb_in22k']
"""

from keras_visrec.zoo.catalogue import ZooEntry, default_weights, get_weights, list_weights, load_catalogue
from keras_visrec.zoo.download import (
    CACHE_ENV, UNVERIFIED_ENV, DownloadError, _unverified_allowed, cache_dir, check_sha256_prefix, download,
    sha256_file,
)

__all__ = [
    "CACHE_ENV", "UNVERIFIED_ENV", "DownloadError", "ZooEntry", "cache_dir", "check_sha256_prefix",
    "default_weights", "download", "fetch_weights", "get_weights", "list_weights", "load_catalogue", "sha256_file",
]


def fetch_weights(zoo_id, *, include_top=True, allow_unverified=False, directory=None, progress=True,
                  lock_timeout=None):
    """Downloads (or finds in the cache) the file of a catalogue entry; returns its local path.

    Several processes asking for the same entry at once download it once; an interrupted download
    resumes on the next call (see :mod:`keras_visrec.zoo.download`). The file is checked against
    the entry's ``sha256`` and, when its name carries one, its ``sha256_prefix``.

    Args:
        zoo_id: str. A catalogue id, e.g. ``"convnext_tiny.keras_in1k"``.
        include_top: bool. When False and the entry has a smaller headless file, fetch that.
            Defaults to `True`.
        allow_unverified: bool. Needed for entries without a published sha256 (or set
            ``KERAS_VISREC_ALLOW_UNVERIFIED=1``). Defaults to `False`.
        directory: str. Cache directory. Defaults to ``$KERAS_VISREC_CACHE`` or
            ``~/.cache/keras_visrec``.
        progress: bool. Show a progress bar. Defaults to `True`.
        lock_timeout: float or None. Seconds to wait for another process fetching the same file;
            None waits until it is done. Defaults to `None`.
    """
    entry = get_weights(zoo_id)
    url, sha256, prefix = entry.url, entry.sha256, entry.sha256_prefix
    if not include_top and entry.notop_url:
        url, sha256, prefix = entry.notop_url, entry.notop_sha256, None  # the prefix names the full file
    if sha256 is None and not _unverified_allowed(allow_unverified):
        raise ValueError(
            f"Zoo entry {zoo_id!r} has no published sha256 ({entry.sha256_source}); it loads only with an "
            f"explicit opt-in: keras_visrec.zoo.fetch_weights({zoo_id!r}, allow_unverified=True) and pass the "
            f"returned path as `weights=`, or set {UNVERIFIED_ENV}=1."
        )
    return download(url, sha256, directory=directory, allow_unverified=True, progress=progress, sha256_prefix=prefix,
                    lock_timeout=lock_timeout)

