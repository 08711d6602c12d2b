"""When the sparse mode should gather and when it should run a convolution densely: measured, per kind.

A masked convolution in the sparse mode either gathers the input patches of its active tiles,
multiplies them by the kernel and scatters the rows into a zero map (:class:`TilePlan.conv
<keras_visrec.adpc.sparse.TilePlan>`), or runs densely; the blend after it is the same pass
either way, except under ``dense_fill="computed"``, where the dense conv skips it and the measured
blend is added to the ways' cost. Which is faster depends on the share of active tiles *and* on the convolution: on a
2-core CPU a 3×3 conv with 48 channels at 1/4 resolution gathers nine narrow rows per output
pixel and pays for them, while one with 384 channels at 1/32 is all matmul. So the rule is a
**crossover share per convolution kind** (kernel, stride, channels in and out, output size,
tile side): the share of active tiles at which both ways take the same time, measured on this
machine by a quick probe, the first time a kind is met, and kept in a table. Below it the
convolution gathers; above it it runs densely.

The table lives in memory for the process and in ``adpc_crossover.json`` in the keras_visrec
cache (``$KERAS_VISREC_CACHE``, default ``~/.cache/keras_visrec``), keyed by a machine
signature (CPU, core count, TensorFlow version, thread setting, sparse kernels' version): a
second process on the same machine reads it instead of probing. :func:`calibrate` probes every convolution of a model at
one input size ahead of time (with a progress bar); :func:`default_table` is the table the
sparse mode uses when it is given none.

The probe masks have the shape of real confidence masks (:func:`synthetic_mask`): thin bands
along the boundaries of a label map of random regions, plus whole regions (blobs) of the
"harder" ones; gather locality, and so gather cost, depends on that shape.
"""

import json
import os
import platform
import re
import threading
import time

import numpy as np

from keras_visrec.files import write_atomic

__all__ = ["CrossoverTable", "KindCosts", "calibrate", "conv_kind", "default_table", "head_kind", "machine_signature",
           "model_kinds", "set_default_table", "synthetic_mask", "synthetic_uncertainty", "ways_of"]

CACHE_FILE = "adpc_crossover.json"
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
PROBE_SHARES = (0.25, 0.75)  # two pixel shares of the probe masks; the sparse cost is linear in the share
_FORMAT = 2


# --- masks with the shape of confidence masks ---------------------------------------------------

def _bilinear_noise(rng, height, width, cell):
    """A smooth random field in [0, 1): uniform noise on a coarse grid, bilinearly upsampled."""
    rows, cols = height // cell + 2, width // cell + 2
    coarse = rng.random((rows, cols))
    y = (np.arange(height) + 0.5) / cell
    x = (np.arange(width) + 0.5) / cell
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    top = coarse[y0][:, x0] * (1 - fx) + coarse[y0][:, x0 + 1] * fx
    bottom = coarse[y0 + 1][:, x0] * (1 - fx) + coarse[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _label_map(rng, height, width, regions, discs):
    """Voronoi cells of ``regions`` random seeds (each with its own anisotropy) with ``discs`` small
    round objects on top: a segmentation-like label map."""
    ys, xs = np.mgrid[0:height, 0:width].astype("float32")
    seeds = rng.uniform((0, 0), (height, width), (regions, 2)).astype("float32")
    stretch = np.exp(rng.uniform(-1.0, 1.0, (regions, 1, 1))).astype("float32")
    labels = np.zeros((height, width), "int32")
    best = np.full((height, width), np.inf, "float32")
    for r in range(regions):  # one seed at a time: memory O(h·w)
        distance = (ys - seeds[r, 0]) ** 2 * stretch[r] + (xs - seeds[r, 1]) ** 2 / stretch[r]
        closer = distance < best
        best = np.where(closer, distance, best)
        labels[closer] = r
    radius_cap = max(2.0, min(height, width) / 32)
    for d in range(discs):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        radius = rng.uniform(1.0, radius_cap)
        labels[(ys - cy) ** 2 + (xs - cx) ** 2 <= radius ** 2] = regions + d
    return labels


def _boundary_distance(labels):
    """Chamfer distance (steps 1 and √2) of every pixel to the nearest pixel with a different 4-neighbour."""
    boundary = np.zeros(labels.shape, bool)
    across, down = labels[:, 1:] != labels[:, :-1], labels[1:] != labels[:-1]
    boundary[:, 1:] |= across
    boundary[:, :-1] |= across
    boundary[1:] |= down
    boundary[:-1] |= down
    distance = np.where(boundary, 0.0, np.inf).astype("float32")
    if not boundary.any():
        return np.zeros(labels.shape, "float32")
    steps = [(dy, dx, float(np.hypot(dy, dx))) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    height, width = labels.shape
    while True:
        padded = np.pad(distance, 1, constant_values=np.inf)
        relaxed = distance
        for dy, dx, cost in steps:
            relaxed = np.minimum(relaxed, padded[1 + dy:1 + dy + height, 1 + dx:1 + dx + width] + cost)
        if np.array_equal(relaxed, distance):
            return distance
        distance = relaxed


def synthetic_uncertainty(height, width, seed=0):
    """A per-pixel uncertainty map whose top quantiles look like ADP-C's confidence masks.

    A label map of random regions (Voronoi cells and small discs, about one region per 1100
    pixels) is the "scene". Uncertainty falls with the distance to the nearest region boundary,
    at a rate drawn per region (log-uniform over 1–40 pixels) and modulated by smooth noise: the
    most uncertain pixels form thin bands along every boundary, and "hard" regions fill up as
    whole blobs long before easy ones lose their interiors.

    Args:
        height, width: int. Map size (the exit resolution, 1/4 of the image).
        seed: int. Defaults to `0`.

    Returns:
        float32 array ``(height, width)``; larger is less confident. Thresholding it at any
        quantile gives nested masks, as the copied pixels of a real ADP-C run are nested.
    """
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer; received {name}={value!r}.")
    rng = np.random.default_rng(seed)
    area = height * width
    regions = max(2, round(area / 1600))
    discs = max(1, round(area / 3300))
    labels = _label_map(rng, height, width, regions, discs)
    rate = np.exp(rng.uniform(np.log(1.0), np.log(40.0), labels.max() + 1)).astype("float32")
    noise = 0.5 + _bilinear_noise(rng, height, width, cell=max(2, min(height, width) // 16))
    score = _boundary_distance(labels) / (rate[labels] * noise)
    return (-score + 1e-4 * rng.random((height, width))).astype("float32")  # jitter: no ties


def synthetic_mask(height, width, share, seed=0, uncertainty=None):
    """The 0/1 mask ``(height, width)`` of the ``share`` most uncertain pixels of :func:`synthetic_uncertainty`.

    Args:
        height, width: int. Map size.
        share: float in (0, 1). Share of pixels to compute (1 in the mask).
        seed: int. Seed of the uncertainty map. Defaults to `0`.
        uncertainty: optional precomputed :func:`synthetic_uncertainty` map of that size.
    """
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 < share < 1.0:
        raise ValueError(f"`share` must be a number in (0, 1); received share={share!r}.")
    if uncertainty is None:
        uncertainty = synthetic_uncertainty(height, width, seed)
    if uncertainty.shape != (height, width):
        raise ValueError(f"`uncertainty` has shape {uncertainty.shape}; expected {(height, width)}.")
    count = max(1, int(round(share * height * width)))
    flat = np.zeros(height * width, "float32")
    flat[np.argsort(-uncertainty, axis=None, kind="stable")[:count]] = 1.0
    return flat.reshape(height, width)


# --- kinds and the table -------------------------------------------------------------------------

def conv_kind(kernel, stride, in_channels, out_channels, height, width, tile):
    """The table key of a masked convolution (output size ``height × width``)."""
    return f"conv k{int(kernel)} s{int(stride)} {int(in_channels)}->{int(out_channels)} {int(height)}x{int(width)} t{int(tile)}"


def head_kind(channels, classes, height, width, tile):
    """The table key of HRNetV2's per-pixel head over branches of ``channels`` (first at ``height × width``)."""
    return f"head {'+'.join(str(int(c)) for c in channels)}->{int(classes)} {int(height)}x{int(width)} t{int(tile)}"


_CONV = re.compile(r"conv k(\d+) s(\d+) (\d+)->(\d+) (\d+)x(\d+) t(\d+)")
_HEAD = re.compile(r"head ((?:\d+\+)*\d+)->(\d+) (\d+)x(\d+) t(\d+)")


def _parse(kind):
    """The fields of a kind made by :func:`conv_kind` or :func:`head_kind`."""
    conv, head = _CONV.fullmatch(str(kind)), _HEAD.fullmatch(str(kind))
    if conv:
        kernel, stride, cin, cout, height, width, tile = (int(v) for v in conv.groups())
        return dict(kind="conv", kernel=kernel, stride=stride, in_channels=cin, out_channels=cout, height=height,
                    width=width, tile=tile)
    if head:
        channels = tuple(int(c) for c in head.group(1).split("+"))
        classes, height, width, tile = (int(v) for v in head.groups()[1:])
        return dict(kind="head", channels=channels, classes=classes, height=height, width=width, tile=tile)
    raise ValueError(f"Unknown crossover kind {kind!r}; expected one made by conv_kind() or head_kind(), e.g. "
                     f"{conv_kind(3, 1, 48, 48, 256, 512, 1)!r}.")


def machine_signature():
    """What a measured crossover depends on besides the kind: CPU, cores, TensorFlow, its threads, the conv kernel
    and the sparse kernels' version (:data:`keras_visrec.adpc.sparse.KERNELS`: tables of older kernels are re-measured)."""
    import tensorflow as tf

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    from keras_visrec.adpc.sparse import KERNELS
    from keras_visrec.layers.conv import conv_routing

    threads = tf.config.threading.get_intra_op_parallelism_threads()
    kernel = conv_routing()  # which kernel runs the convs (layers.Conv2D)
    return (f"{cpu} | {os.cpu_count()} cores | tensorflow {tf.__version__} | intra-op {threads or 'default'} "
            f"| conv {kernel} | sparse kernels {KERNELS}")


def ways_of(kind):
    """The sparse ways a kind can run (besides densely): ``"pixels"`` (gather every computed pixel's
    ``k×k`` patch, one matmul), ``"strips"`` (3×3 convs: each row's runs of computed pixels with their
    halo, one convolution over them), ``"tiles"`` (tiles larger than a pixel)."""
    spec = _parse(kind)
    if spec["tile"] > 1:
        return ("tiles",)
    if spec["kind"] == "conv" and spec["kernel"] == 3 and spec["stride"] in (1, 2):
        return ("pixels", "strips")
    return ("pixels",)


class KindCosts:
    """Measured cost model of one kind: ``dense`` seconds, and per sparse way a line
    ``fixed + slope · share`` in the share that way works on (of active tiles; for strips, of strip
    elements: computed pixels plus their halo).

    Args:
        dense: float. Seconds of the dense convolution.
        ways: ``{way: (fixed, slope)}``.
        blend: float. Seconds the RBF blend after a conv of this kind takes beyond the plain BatchNorm +
            ReLU after it: what a sparse way pays and the dense choice does not when it keeps its
            computed values (``dense_fill="computed"``). Defaults to `0.0` (heads; tables of kernels 2).
    """

    def __init__(self, dense, ways, blend=0.0):
        self.dense = float(dense)
        self.ways = {name: (float(a), float(b)) for name, (a, b) in ways.items()}
        self.blend = max(0.0, float(blend))

    @classmethod
    def from_crossover(cls, kind, share):
        """The model of a fixed rule: the kind's first way costs ``share_of_way / share`` of the dense time."""
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share <= 1.0:
            raise ValueError(f"The crossover of {kind!r} must be a number in [0, 1]; received {share!r}.")
        if share == 0.0:
            return cls(1.0, {})
        return cls(1.0, {ways_of(kind)[0]: (0.0, 1.0 / share)})

    @classmethod
    def from_json(cls, kind, value):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return cls.from_crossover(kind, value)
        try:
            ways = {name: tuple(value[name]) for name in value if name not in ("dense", "blend")}
            unknown = set(ways) - set(ways_of(kind))
            if unknown or not all(len(line) == 2 for line in ways.values()):
                raise ValueError
            return cls(value["dense"], ways, float(value.get("blend", 0.0)))
        except (TypeError, KeyError, ValueError):
            raise ValueError(f"Entry {value!r} of {kind!r} is neither a crossover share nor a cost model "
                             f"{{'dense': seconds, way: [fixed, slope], 'blend': seconds (optional)}} with ways "
                             f"among {ways_of(kind)}.") from None

    def to_json(self):
        blend = {"blend": self.blend} if self.blend else {}
        return {"dense": self.dense, **{name: list(line) for name, line in self.ways.items()}, **blend}

    def cost(self, way, share):
        fixed, slope = self.ways[way]
        return fixed + slope * share

    def crossover(self, way):
        """The share of ``way`` at which it costs as much as the dense convolution, in [0, 1]."""
        fixed, slope = self.ways[way]
        if slope <= 0.0:
            return 1.0 if fixed < self.dense else 0.0
        return float(np.clip((self.dense - fixed) / slope, 0.0, 1.0))

    def __repr__(self):
        return f"KindCosts(dense={self.dense!r}, ways={self.ways!r}, blend={self.blend!r})"


def _fit_line(points):
    """``(fixed, slope)`` of the line through two ``(share, seconds)`` points (flat if the shares coincide)."""
    (s1, t1), (s2, t2) = sorted(points)
    if s2 - s1 < 1e-6:
        return (min(t1, t2), 0.0)
    slope = (t2 - t1) / (s2 - s1)
    return (t1 - slope * s1, slope)


class CrossoverTable:
    """Measured dense and sparse costs per convolution kind: the sparse mode runs each convolution the
    way that costs least at the measured share (densely above every way's crossover).

    Args:
        entries: optional ``{kind: KindCosts | crossover share}`` to start from (a share ``c`` is a
            fixed rule: the kind's first way up to ``c``, dense above).
        path: str or `None`. JSON file to read and extend (entries of this machine's signature);
            `None` keeps the table in memory only.
        probe: bool. Measure kinds that are not in the table; if `False`, an unknown kind raises.
            Defaults to `True`.
        measure: optional callable ``kind -> KindCosts`` replacing the timing probe (tests).
        rounds: int. Timing rounds of a probe (best counts). Defaults to `3`.
        clock: `"cpu"` (the process's CPU time: stable on a shared machine, where wall time measures
            the other processes) or `"wall"`. Part of the machine signature. Defaults to `"cpu"`.
    """

    def __init__(self, entries=None, path=None, probe=True, measure=None, rounds=3, clock="cpu"):
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
            raise ValueError(f"`rounds` must be a positive integer; received rounds={rounds!r}.")
        if clock not in CLOCKS:
            raise ValueError(f"`clock` must be one of {sorted(CLOCKS)}; received clock={clock!r}.")
        self.clock = clock
        self.path = path
        self.probe = bool(probe)
        self.rounds = rounds
        self._measure = measure
        self._lock = threading.Lock()
        self._signature = None
        self.entries = {}
        self.probes = {}  # kind -> the raw measurements of this process's probe
        if path is not None:
            self.entries.update({kind: KindCosts.from_json(_checked(kind), value)
                                 for kind, value in self._read().get(self.signature, {}).items()})
        for kind, value in dict(entries or {}).items():
            self.entries[_checked(kind)] = value if isinstance(value, KindCosts) else KindCosts.from_crossover(kind,
                                                                                                             value)

    @property
    def signature(self):
        if self._signature is None:
            self._signature = f"{machine_signature()} | clock {self.clock}"
        return self._signature

    def _read(self):
        if not self.path or not os.path.exists(self.path):
            return {}
        try:
            with open(self.path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError) as error:
            raise ValueError(f"Crossover table {self.path!r} is not valid JSON ({error}); delete it to re-probe.") from None
        if not isinstance(data, dict) or data.get("format") != _FORMAT or not isinstance(data.get("machines"), dict):
            raise ValueError(f"Crossover table {self.path!r} is not a keras_visrec crossover table (format {_FORMAT}); "
                             "delete it to re-probe.")
        return data["machines"]

    def _write(self):
        if not self.path:
            return
        machines = self._read()
        machines[self.signature] = {kind: costs.to_json() for kind, costs in sorted(self.entries.items())}
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        write_atomic(self.path, json.dumps({"format": _FORMAT, "machines": machines}, indent=1) + "\n")

    def __contains__(self, kind):
        return kind in self.entries

    def costs(self, kind):
        """The :class:`KindCosts` of ``kind`` (:func:`conv_kind` / :func:`head_kind`), probed once if unknown.

        Safe to call while a ``tf.function`` traces: the probe runs eagerly (``tf.init_scope``).
        """
        if kind in self.entries:
            return self.entries[kind]
        if not self.probe:
            raise KeyError(f"No measured costs for {kind!r} and probing is off; call calibrate() or pass entries.")
        import tensorflow as tf

        with self._lock, tf.init_scope():
            if kind not in self.entries:
                if self._measure is not None:
                    costs = self._measure(kind)
                else:
                    self.probes[kind] = _probe(_parse(kind), self.rounds, CLOCKS[self.clock])
                    dense, ways, blend = self.probes[kind]
                    costs = KindCosts(dense, {way: _fit_line(points) for way, points in ways.items()}, blend)
                self.entries[kind] = costs
                self._write()
        return self.entries[kind]

    def crossover(self, kind, way=None):
        """The share up to which ``way`` (default: the kind's first) beats the dense convolution."""
        costs = self.costs(kind)
        way = way or ways_of(kind)[0]
        return costs.crossover(way) if way in costs.ways else 0.0


def _checked(kind):
    _parse(kind)
    return kind


_DEFAULT = {"table": None, "path": None}


def default_table():
    """The table the sparse mode reads when a :class:`~keras_visrec.adpc.masking.MaskHook` is given none:
    the one :func:`set_default_table` installed, else the process-wide table backed by
    ``adpc_crossover.json`` in the keras_visrec cache."""
    from keras_visrec.zoo.download import cache_dir

    if _DEFAULT["path"] is None and _DEFAULT["table"] is not None:
        return _DEFAULT["table"]
    path = os.path.join(cache_dir(), CACHE_FILE)
    if _DEFAULT["path"] != path:
        _DEFAULT.update(table=CrossoverTable(path=path), path=path)
    return _DEFAULT["table"]


def set_default_table(table):
    """Installs ``table`` (a :class:`CrossoverTable`, or `None` for the cache-backed one) as :func:`default_table`;
    returns the previous one. Decisions are taken when a sparse pass is traced, so set it before."""
    if table is not None and not isinstance(table, CrossoverTable):
        raise TypeError(f"`table` must be a CrossoverTable or None; received {type(table).__name__}.")
    previous = _DEFAULT["table"]
    _DEFAULT.update(table=table, path=None)
    return previous


# --- the probe -------------------------------------------------------------------------------------

def _best_times(functions, rounds, clock=time.perf_counter):
    """Best ``clock`` time of each zero-argument function over ``rounds``, every round in a rotated order."""
    for fn in functions:
        fn()  # trace / warm up outside the timing
    best = [float("inf")] * len(functions)
    for r in range(rounds):
        for i in range(len(functions)):
            j = (i + r) % len(functions)
            start = clock()
            functions[j]()
            best[j] = min(best[j], clock() - start)
    return best


def _probe(spec, rounds, clock=time.process_time):
    """``(dense seconds, {way: [(share, seconds) at each probe mask]}, blend seconds)`` of one kind, batch 1.

    The probe masks' indices are built before the timing: a plan's indices are shared by every
    convolution at its resolution, so they are not a per-convolution cost. ``blend``: the RBF blend
    with BatchNorm and ReLU after a conv, less BatchNorm and ReLU alone (0 for heads).
    """
    import tensorflow as tf

    from keras_visrec.adpc.layers import MaskedConv2D, affine_finish, fused_rbf_interpolate
    from keras_visrec.adpc.sparse import TilePlan, dense_conv, dense_pointwise_head

    rng = np.random.default_rng(0)
    height, width, tile = spec["height"], spec["width"], spec["tile"]
    uncertainty = synthetic_uncertainty(height, width, seed=0)
    plans = [TilePlan(tf.constant(synthetic_mask(height, width, s, uncertainty=uncertainty)[None]), tile)
             for s in PROBE_SHARES]
    ways = {way: [] for way in ways_of(_kind_of(spec))}
    if spec["kind"] == "conv":
        stride, kernel, channels = spec["stride"], spec["kernel"], spec["in_channels"]
        pad = kernel // 2
        x = tf.constant(rng.normal(size=(1, height * stride, width * stride, channels)).astype("float32"))
        layer = MaskedConv2D(spec["out_channels"], kernel, strides=stride, padding="same" if stride == 1 else "valid",
                             use_bias=False)
        dense = tf.function(lambda: dense_conv(layer, x, stride, pad))
        y = dense()  # builds the layer
        for plan in plans:
            for way in ways:
                plan.prepare(x, layer, stride, pad, way)  # eagerly, outside the timed functions
                ways[way].append((float(plan.share(way, stride)),
                                  tf.function(lambda plan=plan, way=way: plan.conv(layer, x, stride, pad, way))))
        mask = plans[-1].mask  # (1, h, w, 1)
        scale, offset = tf.unstack(tf.constant(rng.uniform(0.5, 1.5, (2, spec["out_channels"])).astype("float32")))
        finishes = [tf.function(lambda: fused_rbf_interpolate(y, mask, layer.rbf_lambda, scale, offset, True)),
                    tf.function(lambda: affine_finish(y, scale, offset, True))]
    else:
        import keras

        xs = [tf.constant(rng.normal(size=(1, height // 2 ** i, width // 2 ** i, c)).astype("float32"))
              for i, c in enumerate(spec["channels"])]
        features = (1, height, width, sum(spec["channels"]))
        conv = MaskedConv2D(features[-1], 1, use_bias=True)
        bn = keras.layers.BatchNormalization()
        classifier = MaskedConv2D(spec["classes"], 1, use_bias=True)
        for layer in (conv, bn, classifier):
            layer.build(features)
        dense = tf.function(lambda: dense_pointwise_head(xs, conv, bn, classifier))
        (way,) = ways
        for plan in plans:
            plan.centre_index  # noqa: B018 (builds the indices eagerly)
            ways[way].append((float(plan.tile_share),
                              tf.function(lambda plan=plan: plan.pointwise_head(xs, conv, bn, classifier))))
        finishes = []
    timed = [dense] + [fn for points in ways.values() for _, fn in points] + finishes
    times = iter(_best_times([lambda fn=fn: fn().numpy() for fn in timed], rounds, clock))
    dense_seconds = next(times)
    way_seconds = {way: [(share, next(times)) for share, _ in points] for way, points in ways.items()}
    blend = next(times) - next(times) if finishes else 0.0
    return dense_seconds, way_seconds, max(0.0, blend)


def _kind_of(spec):
    if spec["kind"] == "conv":
        return conv_kind(spec["kernel"], spec["stride"], spec["in_channels"], spec["out_channels"], spec["height"],
                         spec["width"], spec["tile"])
    return head_kind(spec["channels"], spec["classes"], spec["height"], spec["width"], spec["tile"])


def model_kinds(model, input_shape):
    """``{kind: [layer names]}``: what the sparse mode of ``model`` looks up at ``input_shape``.

    Every ``MaskedConv2D`` whose output map is more than one tile, keyed by :func:`conv_kind`;
    HRNetV2's segmentation head (``last_layer``) as one :func:`head_kind`.
    """
    from keras_visrec.adpc.layers import MaskedConv2D
    from keras_visrec.adpc.sparse import tile_side
    from keras_visrec.flops import count_flops

    network = getattr(model, "network", model)
    shapes = {entry.name: entry.output_shape for entry in count_flops(network, tuple(input_shape)).per_layer}
    head = f"{network.name}_last_layer_"
    layers = {layer.name: layer for layer in network.layers}
    branches = getattr(model, "config_dict", {}).get("stages", [[None, None, ()]])[-1][2]
    head_conv = layers.get(head + "0")
    has_head = (isinstance(head_conv, MaskedConv2D) and head + "3" in layers
                and int(head_conv.kernel.shape[2]) == sum(branches))
    kinds = {}
    for name, layer in layers.items():
        if not isinstance(layer, MaskedConv2D):
            continue
        height, width = (int(v) for v in shapes[name][1:3])
        tile = tile_side(height, width, getattr(model, "tile", 1))
        if tile >= max(height, width):
            continue  # one tile: always dense
        if has_head and name.startswith(head):
            kind = head_kind(branches, model.classes, height, width, tile)
        else:
            kind = conv_kind(layer.kernel_size[0], layer.strides[0], layer.kernel.shape[2], layer.filters, height,
                             width, tile)
        kinds.setdefault(kind, []).append(name)
    return kinds


def calibrate(model, input_shape, table=None, progress=True):
    """Measures, ahead of time, every kind the sparse mode of ``model`` meets at ``input_shape``.

    Args:
        model: an ``AnytimeHRNet``.
        input_shape: ``(height, width, 3)``.
        table: :class:`CrossoverTable`. Defaults to :func:`default_table` (the one the model's
            sparse mode reads).
        progress: bool. Show a progress bar over the kinds. Defaults to `True`.

    Returns:
        ``{kind: KindCosts}``.
    """
    from tqdm.auto import tqdm

    table = table if table is not None else default_table()
    kinds = sorted(model_kinds(model, input_shape))
    return {kind: table.costs(kind) for kind in tqdm(kinds, desc="adpc crossover", unit="kind",
                                                       disable=not progress)}
