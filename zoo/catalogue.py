"""The weights catalogue (``catalogue.json``) as typed, read-only entries.

Ids follow ``{arch}.{source}_{pretraining}[_{resolution}]`` (timm's ``arch.tag`` style):

* ``arch`` — the registry name (``convnext_tiny``, ``convnext_v2_atto``, ``convnext_isotropic_base``);
* ``source`` — ``fb`` (the official Meta release) or ``keras`` (keras.applications' converted file);
* ``pretraining`` — ``in1k``, ``in22k`` (21841-class head), ``in22k_ft_in1k``, ``fcmae_ft_in1k``,
  ``fcmae_ft_in22k_ft_in1k``;
* a resolution suffix (``_384``, ``_512``) only when the checkpoint is not 224×224.

Example: ``convnext_base.fb_in22k_ft_in1k_384``.
"""

import dataclasses
import difflib
import fnmatch
import functools
import json
import os
import types
import typing

__all__ = ["TASKS", "CatalogueError", "ZooEntry", "default_weights", "get_weights", "list_weights", "load_catalogue"]

_CATALOGUE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "catalogue.json")


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    """One checkpoint of the catalogue.

    Attributes:
        id: str. ``{arch}.{tag}``.
        arch: str. Registry name of the architecture it loads into.
        source: str. ``fb`` (Meta), ``keras`` (keras.applications), ``tv`` (torchvision), ``mmpretrain``…
        pretraining: str. Pretraining / fine-tuning recipe tag.
        resolution: int. Training / evaluation resolution.
        classes: int. Head size (1000, or 21841 for ImageNet-22k heads).
        url: str. Download address of the file.
        format: str. ``pth`` (a torch.save checkpoint) or ``keras_h5`` (keras.applications' h5).
        layout: str. Key layout (``official``, ``official_isotropic``, ``torchvision``, ``mmpretrain``,
            ``keras_applications``, ``mmseg`` …).
        sha256: str or None. Published checksum; None when upstream published none.
        sha256_source: str. Where the checksum comes from, or why there is none.
        top1: float or None. ImageNet-1k top-1 (%) reported upstream; None for 22k heads.
        license: str. SPDX-style licence of the weights (V2: CC-BY-NC-4.0).
        preprocessing: dict. Evaluation transform (resize, crop, interpolation, mean, std).
        num_params: int. Parameter count of the architecture with this head.
        default: bool. Whether ``weights="imagenet"`` resolves to this entry.
        notop_url / notop_sha256: optional smaller headless file.
        task: str. ``classification`` (top-1 in ``top1``), ``segmentation``, ``pose`` or
            ``detection``; the other tasks report in ``metrics``.
        dataset: str. What the weights were trained / evaluated on (``imagenet-1k``, ``ade20k``,
            ``cityscapes``, ``mpii``, ``coco``).
        metrics: dict. Published figures beyond top-1, e.g. ``{"miou": 46.0, "miou_ms": 46.7}``,
            ``{"pckh": 90.3}``, ``{"box_ap": 46.2}``; ``metrics_source`` says where from.
        fetch: str. How a user gets the file when ``url`` is not a direct download (e.g. a Google
            Drive folder): the steps, then ``weights=PATH``.
        sha256_prefix: str or None. The hash prefix the upstream file name carries (torch.hub's
            ``check_hash`` convention): checked on download, weaker than a full sha256.
    """

    id: str
    arch: str
    source: str
    pretraining: str
    resolution: int
    classes: int
    url: str
    format: str
    layout: str
    sha256: str | None
    sha256_source: str
    top1: float | None
    license: str
    preprocessing: dict
    num_params: int
    default: bool = False
    notop_url: str | None = None
    notop_sha256: str | None = None
    top1_source: str = "official README of the upstream repository"
    upstream: str = ""
    task: str = "classification"
    dataset: str = "imagenet-1k"
    metrics: dict = dataclasses.field(default_factory=dict)
    metrics_source: str = ""
    fetch: str = ""
    sha256_prefix: str | None = None

    @property
    def verified(self):
        """Whether a published sha256 guards this entry's download."""
        return self.sha256 is not None

    @property
    def filename(self):
        """File name in the cache (the URL's last component)."""
        return self.url.rsplit("/", 1)[-1]


TASKS = ("classification", "segmentation", "pose", "detection")


class CatalogueError(ValueError):
    """A catalogue file that is not valid JSON or whose entries do not fit :class:`ZooEntry` (names file, entry, field)."""


def _fits(value, annotation):
    """Whether a JSON value fits a ZooEntry annotation (an int is a valid float; a bool is no number)."""
    options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    for option in options:
        if option is type(None) and value is None:
            return True
        if option is float and type(value) in (int, float):
            return True
        if option in (int, bool, str, dict) and type(value) is option:
            return True
    return False


def _check_entry(path, zoo_id, raw):
    if not isinstance(raw, dict):
        raise CatalogueError(f"{path}: entry {zoo_id!r} is a JSON {type(raw).__name__}, not an object.")
    fields = {f.name: f for f in dataclasses.fields(ZooEntry)}
    unknown = set(raw) - set(fields) | ({"id"} & set(raw))  # the id is the entry's key, not a field
    if unknown:
        raise CatalogueError(f"{path}: entry {zoo_id!r} has unknown fields {sorted(unknown)}.")
    required = [name for name, f in fields.items() if name != "id" and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    missing = [name for name in required if name not in raw]
    if missing:
        raise CatalogueError(f"{path}: entry {zoo_id!r} lacks the fields {missing}.")
    for name, value in raw.items():
        if not _fits(value, fields[name].type):
            raise CatalogueError(f"{path}: entry {zoo_id!r} field {name!r} is {type(value).__name__} "
                                 f"{str(value)[:40]!r}; expected {fields[name].type}.")
    if raw.get("task", "classification") not in TASKS:
        raise CatalogueError(f"{path}: entry {zoo_id!r} has task {raw['task']!r}; expected one of {TASKS}.")


@functools.lru_cache(maxsize=None)
def load_catalogue(path=_CATALOGUE):
    """Reads and validates the catalogue file; returns ``{id: ZooEntry}``.

    Raises:
        CatalogueError (a ValueError): the file is not JSON, lacks ``entries``, or an entry has
            unknown or missing fields or a value of the wrong type (named in the message).
    """
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise CatalogueError(f"{path}: not a valid JSON catalogue ({str(error)[:200]}).") from None
    if not isinstance(data, dict) or not isinstance(data.get("entries"), dict):
        raise CatalogueError(f"{path}: a catalogue is a JSON object with an 'entries' object.")
    entries = {}
    for zoo_id, raw in data["entries"].items():
        _check_entry(path, zoo_id, raw)
        entries[zoo_id] = ZooEntry(id=zoo_id, **raw)
    return entries


def list_weights(pattern="*", arch=None, task=None):
    """Catalogue ids matching a glob ``pattern`` (and ``arch`` / ``task``, when given), sorted."""
    return sorted(
        zoo_id for zoo_id, entry in load_catalogue().items()
        if fnmatch.fnmatch(zoo_id, pattern) and (arch is None or entry.arch == arch)
        and (task is None or entry.task == task)
    )


def get_weights(zoo_id):
    """The :class:`ZooEntry` for ``zoo_id``; an unknown id lists close matches."""
    entries = load_catalogue()
    if zoo_id not in entries:
        close = difflib.get_close_matches(str(zoo_id), list(entries), n=5, cutoff=0.5)
        hint = f" Close matches: {close}." if close else ""
        raise ValueError(f"Unknown zoo id {zoo_id!r}.{hint} See keras_visrec.zoo.list_weights().")
    return entries[zoo_id]


def default_weights(arch):
    """The entry ``weights="imagenet"`` loads for ``arch`` (one with a published hash), or None."""
    for entry in load_catalogue().values():
        if entry.arch == arch and entry.default:
            return entry
    return None
