"""What the official tools write beside the tensors is read as inert data; everything else stays refused.

Each payload is written the way the real tool writes it: the standard ``pickle`` module at the
protocol ``torch.save`` uses (2; ``torch.save`` pickles everything but tensors with it), inside
the same zip / legacy container, and — in the torch-marked tests — by ``torch.save`` itself.
"""

import argparse
import collections
import importlib.util
import logging
import os
import pickle
import zipfile

import numpy as np
import pytest

from keras_visrec.converters.convnext_keys import unwrap_checkpoint
from keras_visrec.converters.pytorch_reader import ALLOWED_GLOBALS, CheckpointError, Record, load_pytorch_checkpoint

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def _zip(path, obj, protocol=2):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(obj, protocol=protocol))
        archive.writestr("archive/version", "3\n")
    return path


def _legacy(path, obj):
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    path.write_bytes(b"".join(pickle.dumps(x, protocol=2) for x in (_LEGACY_MAGIC, 1001, sys_info, obj, [])))
    return path


def _round_trip(tmp_path, obj, protocol=2, container="zip"):
    writer = _zip if container == "zip" else _legacy
    kwargs = {"protocol": protocol} if container == "zip" else {}
    return load_pytorch_checkpoint(writer(tmp_path / f"c_{container}_{protocol}.pth", obj, **kwargs))


def _official_args():
    """A slice of facebookresearch/ConvNeXt main.py's argparse result (types as its parser makes them)."""
    return argparse.Namespace(
        batch_size=128, epochs=300, update_freq=1, model="convnext_tiny", drop_path=0.1, input_size=224,
        layer_scale_init_value=1e-6, model_ema=True, model_ema_decay=0.9999, model_ema_force_cpu=False,
        opt="adamw", opt_eps=1e-8, opt_betas=None, clip_grad=None, weight_decay=0.05, lr=4e-3,
        color_jitter=0.4, aa="rand-m9-mstd0.5-inc1", smoothing=0.1, train_interpolation="bicubic",
        reprob=0.25, mixup=0.8, cutmix=1.0, cutmix_minmax=None, data_path="/datasets01/imagenet_full_size/061417/",
        nb_classes=1000, output_dir="/checkpoint/convnext_tiny", device="cuda", seed=0, auto_resume=True,
        dist_url="env://", distributed=True, rank=0, gpu=0, world_size=32, dist_backend="nccl",
        layer_decay_steps=[0.9, 0.8],
    )


@pytest.mark.parametrize("container, protocol", [("zip", 2), ("zip", 4), ("legacy", 2)])
def test_argparse_namespace_becomes_a_record_never_the_class(tmp_path, container, protocol):
    args = _official_args()
    out = _round_trip(tmp_path, {"epoch": 299, "args": args}, protocol, container)["args"]
    assert type(out) is Record and not isinstance(out, argparse.Namespace)
    assert out.type_name == "argparse.Namespace"
    assert dict(out) == vars(args)
    assert out.lr == 4e-3 and out["model"] == "convnext_tiny" and out.opt_betas is None
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        out.nonexistent  # noqa: B018


def test_ordered_dict_and_defaultdict_of_plain_data(tmp_path):
    counts = collections.defaultdict(int, {"a": 3})
    groups = collections.defaultdict(list, {"decay": ["w"], "no_decay": ["b"]})
    ordered = collections.OrderedDict([("z", 1), ("a", {"nested": (1, 2.5)})])
    out = _round_trip(tmp_path, {"counts": counts, "groups": groups, "ordered": ordered, "none": collections.defaultdict()})
    assert type(out["counts"]) is collections.defaultdict and out["counts"].default_factory is int
    assert out["counts"] == {"a": 3} and out["counts"]["missing"] == 0
    assert out["groups"].default_factory is list and out["groups"] == groups
    assert type(out["ordered"]) is collections.OrderedDict and list(out["ordered"]) == ["z", "a"]
    assert out["ordered"]["a"]["nested"] == (1, 2.5)
    assert out["none"].default_factory is None


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numpy_arrays_scalars_and_dtypes_as_numpy_pickles_them(tmp_path, protocol):
    values = {
        "f64": np.arange(6, dtype="<f8").reshape(2, 3),
        "big_endian": np.arange(4, dtype=">i4"),
        "fortran": np.asfortranarray(np.arange(12, dtype="float32").reshape(3, 4)),
        "bool": np.array([True, False]),
        "text": np.array(["road", "sidewalk"]),
        "empty": np.zeros((0, 3), "int16"),
        "half": np.array([0.5, -1.25], "float16"),
    }
    scalars = {"i64": np.int64(-7), "f32": np.float32(0.25), "b": np.bool_(True), "f64": np.float64(81.3)}
    out = _round_trip(tmp_path, {"arrays": values, "scalars": scalars, "dtype": np.dtype("int8")}, protocol)
    for name, array in values.items():
        np.testing.assert_array_equal(out["arrays"][name], array)
        assert out["arrays"][name].dtype == array.dtype, name
        assert out["arrays"][name].flags.writeable
    assert out["arrays"]["fortran"].flags.f_contiguous
    for name, scalar in scalars.items():
        assert type(out["scalars"][name]) is type(scalar) and out["scalars"][name] == scalar
    assert out["dtype"] == np.dtype("int8")


def test_numpy_1_spelling_numpy_core_is_read_too(tmp_path):
    # numpy 1.x names numpy.core.multiarray where numpy 2 names numpy._core.multiarray; the
    # protocol-2 GLOBAL opcode carries the name as text, so rewriting it gives numpy 1's bytes.
    data = pickle.dumps({"a": np.arange(3.0), "s": np.float64(2.0)}, protocol=2)
    old = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray\n_reconstruct" in old and b"numpy._core" not in old
    path = tmp_path / "np1.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", old)
    out = load_pytorch_checkpoint(path)
    np.testing.assert_array_equal(out["a"], np.arange(3.0))
    assert out["s"] == 2.0


def test_bytes_sets_frozensets_and_complex_in_protocols_2_and_4(tmp_path):
    obj = {"raw": b"\x00\xffab", "empty": b"", "tags": {"a", "b"}, "frozen": frozenset({1, (2, 3)}),
           "z": complex(1.5, -2.0), "buffer": bytearray(b"xy")}
    for protocol in (2, 4):
        out = _round_trip(tmp_path, obj, protocol)
        assert out == obj, protocol
        assert type(out["frozen"]) is frozenset and type(out["buffer"]) is bytearray


def test_mmseg_meta_config_text_classes_and_palette(tmp_path):
    config = "norm_cfg = dict(type='SyncBN', requires_grad=True)\nmodel = dict(type='EncoderDecoder', ...)\n"
    meta = {
        "mmcv_version": "1.3.0", "time": "Sat Dec 25 10:00:00 2021", "env_info": "sys.platform: linux\nPython: 3.8",
        "seed": 0, "exp_name": "upernet_convnext_tiny_512_160k_ade20k_ms.py", "config": config,
        "CLASSES": ("wall", "building", "sky"), "PALETTE": [[120, 120, 120], [180, 120, 120], [6, 230, 230]],
        "epoch": 1, "iter": 160000, "hook_msgs": {"last_ckpt": "iter_160000.pth", "best_score": np.float64(46.0)},
        "random_palette": np.random.RandomState(0).randint(0, 255, size=(3, 3)),
    }
    out = _round_trip(tmp_path, {"meta": meta, "state_dict": {}})["meta"]
    assert out["config"] == config and out["CLASSES"] == ("wall", "building", "sky")
    assert out["PALETTE"][2] == [6, 230, 230] and out["mmcv_version"] == "1.3.0"
    assert out["hook_msgs"]["best_score"] == 46.0
    np.testing.assert_array_equal(out["random_palette"], meta["random_palette"])


# ---- still refused, with the global named ------------------------------------------------------------

class _Custom:
    pass


class _NamespaceChild(argparse.Namespace):
    pass


@pytest.mark.parametrize("name, obj, named", [
    ("custom class", {"x": _Custom()}, "test_inert_objects._Custom"),
    ("namespace subclass", {"args": _NamespaceChild(a=1)}, "_NamespaceChild"),
    ("object array", {"a": np.array([1, "two"], dtype=object)}, "'O8' is not allowed"),
    ("record array", {"a": np.zeros(2, dtype=[("x", "f4"), ("y", "i4")])}, "numpy dtype"),
    ("numpy matrix", {"a": np.matrix([[1, 2]])}, "'numpy.matrix"),
    ("masked array", {"a": np.ma.masked_array([1, 2], mask=[0, 1])}, "numpy.ma.core._mareconstruct"),
    ("defaultdict of a function", {"d": collections.defaultdict(os.getcwd)}, "getcwd"),
    ("datetime", {"t": __import__("datetime").datetime(2022, 1, 1)}, "datetime.datetime"),
])
def test_everything_else_is_refused_naming_the_global(tmp_path, name, obj, named):
    with pytest.raises(CheckpointError) as info:
        _round_trip(tmp_path, obj)
    assert named in str(info.value), str(info.value)
    assert "c_zip_2.pth" in str(info.value)


def test_namespace_rebuilt_only_from_attributes(tmp_path):
    # a hand-written REDUCE that passes arguments to Namespace (the pickler never does this)
    data = b"\x80\x02cargparse\nNamespace\nX\x01\x00\x00\x00a\x85R."
    path = tmp_path / "ns.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data)
    with pytest.raises(CheckpointError, match="only rebuilt from its attributes"):
        load_pytorch_checkpoint(path)
    # BUILD with a non-dict state on a Namespace
    data = b"\x80\x02cargparse\nNamespace\n)\x81K\x01b."
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data)
    with pytest.raises(CheckpointError, match="BUILD on Record"):
        load_pytorch_checkpoint(path)


def test_allowed_globals_list_documents_the_additions():
    for name in ("argparse.Namespace", "collections.defaultdict", "numpy._core.multiarray._reconstruct",
                 "numpy.core.multiarray.scalar", "numpy.dtype", "torch.Size", "torch.device", "_codecs.encode"):
        assert name in ALLOWED_GLOBALS
    readme = open(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "converters", "README.md")).read()
    for name in ("argparse.Namespace", "defaultdict", "numpy._core", "torch.Size", "torch.device", "_codecs.encode"):
        assert name in readme, name


def test_pickled_memory_bomb_and_self_reference_are_refused(tmp_path):
    path = tmp_path / "bomb.pth"
    # one 1 MB string, memoised, encoded 200 times: 200 MB from a 1 MB file
    bomb = b"\x80\x02X" + (1 << 20).to_bytes(4, "little") + b"a" * (1 << 20) + b"q\x00(" + \
        b"c_codecs\nencode\nh\x00X\x06\x00\x00\x00latin1\x86R" * 200 + b"l."
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", bomb)
    with pytest.raises(CheckpointError, match="memory bomb"):
        load_pytorch_checkpoint(path)
    cycle = b"\x80\x02]q\x00h\x00a."  # a list that contains itself
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", cycle)
    with pytest.raises(CheckpointError, match="refers to itself"):
        load_pytorch_checkpoint(path)
    deep = b"\x80\x02" + b"]" * 5000 + b"a" * 4999 + b"."
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", deep)
    with pytest.raises(CheckpointError, match="nests deeper"):
        load_pytorch_checkpoint(path)


# ---- real torch.save files: the official training checkpoint through weights= ---------------------

_HERE = os.path.dirname(os.path.abspath(__file__))


def _torch_reference():
    spec = importlib.util.spec_from_file_location("torch_convnext", os.path.join(_HERE, os.pardir, "fixtures",
                                                                                "torch_convnext.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def training_checkpoint(tmp_path_factory):
    """What facebookresearch/ConvNeXt's utils.save_model writes, with torch.save, for a tiny ConvNeXt."""
    torch = pytest.importorskip("torch")
    tc = _torch_reference()
    model = tc.randomise(tc.ConvNeXtRef((1, 1, 1, 1), (8, 16, 24, 32), classes=5), seed=1)
    ema = tc.randomise(tc.ConvNeXtRef((1, 1, 1, 1), (8, 16, 24, 32), classes=5), seed=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-3)
    model(torch.zeros(2, 3, 32, 32))[0].sum().backward()
    optimizer.step()
    args = _official_args()
    args.device = torch.device("cuda", 0)   # what a user's own parser may hold
    args.crop = torch.Size([224, 224])
    checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 299,
                  "scaler": torch.amp.GradScaler("cpu").state_dict(), "model_ema": ema.state_dict(), "args": args}
    path = tmp_path_factory.mktemp("train") / "checkpoint-best.pth"
    torch.save(checkpoint, path)
    return path, model.state_dict(), ema.state_dict(), optimizer.state_dict()


@pytest.mark.torch
def test_real_torch_save_training_checkpoint_reads_every_entry(training_checkpoint):
    path, state, ema, optimizer = training_checkpoint
    out = load_pytorch_checkpoint(path)
    assert list(out) == ["model", "optimizer", "epoch", "scaler", "model_ema", "args"]
    for key, value in state.items():
        np.testing.assert_array_equal(out["model"][key], value.numpy())
    assert out["epoch"] == 299 and out["scaler"]["scale"] == 65536.0
    group = out["optimizer"]["param_groups"][0]
    assert group["betas"] == (0.9, 0.999) and group["lr"] == 4e-3 and group["params"] == list(range(len(state)))
    step = out["optimizer"]["state"][0]
    np.testing.assert_array_equal(step["exp_avg"], optimizer["state"][0]["exp_avg"].numpy())
    assert step["step"].shape == () and float(step["step"]) == 1.0
    args = out["args"]
    assert type(args) is Record and args.model == "convnext_tiny" and args.world_size == 32
    assert args.device == "cuda:0" and args.crop == (224, 224)


@pytest.mark.torch
def test_training_checkpoint_through_weights_picks_model_and_reports_the_rest(training_checkpoint, caplog):
    import keras_visrec
    from keras_visrec.converters.loading import load_checkpoint_into_model

    path, state, ema, _ = training_checkpoint
    build = dict(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), classes=5, input_shape=(32, 32, 3))
    with caplog.at_level(logging.INFO, logger="keras_visrec"):
        model = keras_visrec.ConvNeXt(weights=os.fspath(path), **build)
    head = model.get_layer(f"{model.name}_head_dense").kernel.numpy()
    np.testing.assert_allclose(head, state["head.weight"].numpy().T)
    assert "not loaded: optimizer, epoch, scaler, model_ema, args" in caplog.text
    assert "loaded entry 'model'" in caplog.text

    ema_model = keras_visrec.ConvNeXt(**build)
    summary = load_checkpoint_into_model(ema_model, path, include_top=True, prefer_ema=True)
    assert summary["entry"] == "model_ema"
    assert summary["other_entries"] == ["model", "optimizer", "epoch", "scaler", "args"]
    head = ema_model.get_layer(f"{ema_model.name}_head_dense").kernel.numpy()
    np.testing.assert_allclose(head, ema["head.weight"].numpy().T)


def test_unwrap_checkpoint_reports_entries():
    w = np.zeros(2, "float32")
    state, found = unwrap_checkpoint({"meta": {"CLASSES": ("a",)}, "state_dict": {"module.x": w}, "optimizer": {}})
    assert list(state) == ["x"] and found == {"entry": "state_dict", "other_entries": ["meta", "optimizer"]}
    # the released files: {"model": …} only, and a bare state dict
    assert unwrap_checkpoint({"model": {"x": w}})[1] == {"entry": "model", "other_entries": []}
    assert unwrap_checkpoint({"x": w}, prefer_ema=True)[1] == {"entry": None, "other_entries": []}
    # EMA asked for but absent: the model entry (released *_ema.pth files hold EMA weights under "model")
    assert unwrap_checkpoint({"model": {"x": w}, "epoch": 3}, prefer_ema=True)[1]["entry"] == "model"
    # an `args` record is never mistaken for a state dict
    assert unwrap_checkpoint({"args": Record("argparse.Namespace", {"x": w}), "model": {"y": w}})[1]["entry"] == "model"
