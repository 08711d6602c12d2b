"""Every .tflite a user hands us is analysed, profiled and benchmarked, not crashed on.

The files are built here the way real tools write them: a custom op through the converter's
``allow_custom_ops``; MediaPipe's ``Convolution2DTransposeBias`` (the custom op of the
third-party segmentation model that crashed ``analyze_tflite``: XNNPACK runs it, the builtin
kernels do not) by rewriting a converted TRANSPOSE_CONV into it; several signatures from a
``tf.Module``; 16x8 quantization; fp16 and int8 (dynamic-range) weights; dynamic shapes.
"""

import struct

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_visrec  # noqa: E402
from keras_visrec.tflite.edgetpu import check_edgetpu, custom_op_support  # noqa: E402
from keras_visrec.tflite.profile import profile_tflite  # noqa: E402
from keras_visrec.tflite.report import TFLiteFileError, analyze_tflite, read_ops, read_tflite  # noqa: E402


def _conv_net():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3), batch_size=1)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    # 8 × 256 weights: above the converter's 1024-element floor for dynamic-range int8 weights
    return keras.Model(inputs, keras.layers.Dense(256, name="dense")(x))


def _images(n=4):
    return np.random.default_rng(0).uniform(-1, 1, (n, 8, 8, 3)).astype("float32")


def _custom_unresolved():
    weights = tf.constant(np.random.RandomState(0).normal(size=(3, 3, 3, 4)).astype("float32"))

    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.float32)])
    def determinant(x):
        y = tf.nn.conv2d(x, weights, 1, "SAME")
        return tf.linalg.det(tf.reshape(y[:, :, :, :1], [1, 8, 8]))

    converter = tf.lite.TFLiteConverter.from_concrete_functions([determinant.get_concrete_function()])
    converter.allow_custom_ops = True
    return converter.convert()


def _transpose_conv():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 3), batch_size=1)
    outputs = keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same", bias_initializer="random_normal")(inputs)
    return tf.lite.TFLiteConverter.from_keras_model(keras.Model(inputs, outputs)).convert()


def _as_mediapipe_custom_op(content):
    """TRANSPOSE_CONV(output_shape, weights, input, bias) → MediaPipe's Convolution2DTransposeBias(input, weights, bias).

    Its options are TfLiteTransposeConvParams as raw int32s: padding (1 = SAME), stride w, stride h, activation.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(bytearray(content), 0))
    (op,) = model.subgraphs[0].operators
    assert model.operatorCodes[op.opcodeIndex].builtinCode == schema.BuiltinOperator.TRANSPOSE_CONV
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode, code.version = b"Convolution2DTransposeBias", 1
    model.operatorCodes.append(code)
    strides = (op.builtinOptions.strideW, op.builtinOptions.strideH)
    op.opcodeIndex = len(model.operatorCodes) - 1
    op.inputs = [op.inputs[2], op.inputs[1], op.inputs[3]]
    op.builtinOptionsType, op.builtinOptions = 0, None
    op.customOptions = list(struct.pack("<iiii", 1, *strides, 0))
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


class _TwoSignatures(tf.Module):
    def __init__(self):
        super().__init__()
        self.w = tf.Variable(np.random.RandomState(0).randn(3, 4).astype("float32"))

    @tf.function(input_signature=[tf.TensorSpec([1, 3], tf.float32, name="x")])
    def encode(self, x):
        return {"code": tf.nn.relu(tf.matmul(x, self.w))}

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="code")])
    def decode(self, code):
        return {"recon": tf.matmul(code, self.w, transpose_b=True)}


def _quantized(model, kind):
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if kind == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    elif kind == "16x8":
        converter.representative_dataset = lambda: ([image[None]] for image in _images(8))
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    return converter.convert()


def _dynamic():
    keras.utils.set_random_seed(2)
    inputs = keras.Input((None, None, 3))
    outputs = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    return tf.lite.TFLiteConverter.from_keras_model(keras.Model(inputs, outputs)).convert()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("robust")
    net = _conv_net()
    module = _TwoSignatures()
    tconv = _transpose_conv()
    contents = {
        "custom_unresolved": _custom_unresolved(),
        "transpose_conv": tconv,
        "custom_xnnpack": _as_mediapipe_custom_op(tconv),
        "multi_signature": tf.lite.TFLiteConverter.from_concrete_functions(
            [module.encode.get_concrete_function(), module.decode.get_concrete_function()], module).convert(),
        "16x8": _quantized(net, "16x8"),
        "fp16": _quantized(net, "fp16"),
        "dynamic_int8": _quantized(net, "dynamic"),
        "dynamic_shape": _dynamic(),
    }
    paths = {}
    for name, content in contents.items():
        paths[name] = folder / f"{name}.tflite"
        paths[name].write_bytes(content)
    return paths


def test_read_ops_no_longer_crashes_on_an_unresolved_custom_op(files):
    # regression: read_ops went through a builtin-only interpreter and raised
    # "RuntimeError: Encountered unresolved custom op" on files load_tflite(...).predict runs
    content = files["custom_xnnpack"].read_bytes()
    ops = read_ops(content)
    assert [(op.op, op.custom) for op in ops] == [("Convolution2DTransposeBias", True)]
    assert ops[0].xnnpack
    assert [op.op for op in read_ops(files["custom_unresolved"].read_bytes(), with_xnnpack=False)][-1] == \
        "MatrixDeterminant"


def test_custom_op_that_only_xnnpack_runs_is_analysed_run_and_explained(files):
    report = analyze_tflite(files["custom_xnnpack"])
    (custom,) = report.custom_ops
    assert custom["op"] == "Convolution2DTransposeBias" and custom["count"] == 1
    assert custom["xnnpack"] and not custom["builtin"] and not custom["edgetpu"] and custom["delegated"] == 1
    assert report.xnnpack_fraction == 1.0 and not report.xnnpack_refused
    assert report.runtime["xnnpack"] == "ok" and "unresolved custom op" in report.runtime["builtin"]
    assert any("runs only through XNNPACK" in p for p in report.problems)
    assert "custom op Convolution2DTransposeBias x1: kernel in xnnpack" in str(report)
    # and the runtime computes what the builtin TRANSPOSE_CONV computes
    x = _images(2)
    np.testing.assert_allclose(keras_visrec.load_tflite(files["custom_xnnpack"]).predict(x),
                               keras_visrec.load_tflite(files["transpose_conv"], xnnpack=False).predict(x),
                               atol=1e-5)
    with pytest.raises(RuntimeError, match="runs only through XNNPACK: load with xnnpack=True"):
        keras_visrec.load_tflite(files["custom_xnnpack"], xnnpack=False)


def test_custom_op_no_runtime_has_is_listed_not_crashed_on(files):
    report = analyze_tflite(files["custom_unresolved"])
    assert [c["op"] for c in report.custom_ops] == ["MatrixDeterminant"]
    assert not report.custom_ops[0]["known"] and report.custom_ops[0]["delegated"] is None
    assert any("MatrixDeterminant" in p and "register its kernel" in p for p in report.problems)
    assert not report.xnnpack_refused  # nothing would run with xnnpack=False either
    edgetpu = check_edgetpu(report.ops)
    assert "custom op MatrixDeterminant: the Edge TPU compiler maps builtin ops only" in \
        edgetpu.entries[-1]["reasons"]
    with pytest.raises(RuntimeError, match="MatrixDeterminant"):
        keras_visrec.load_tflite(files["custom_unresolved"])
    with pytest.raises(RuntimeError, match="Could not prepare"):
        profile_tflite(files["custom_unresolved"], rounds=1, warmup=0)


def test_custom_op_table():
    assert custom_op_support("Convolution2DTransposeBias")["xnnpack"]
    assert custom_op_support("TFLite_Detection_PostProcess")["builtin"]
    assert custom_op_support("edgetpu-custom-op")["edgetpu"]
    assert custom_op_support("FlexConv3D") == {**custom_op_support("FlexAnything"), "known": True}
    assert not custom_op_support("MyOwnOp")["known"]


def test_several_subgraphs_and_signatures(files):
    model = read_tflite(files["multi_signature"].read_bytes())
    assert len(model.subgraphs) == 2
    assert sorted(s["key"] for s in model.signatures) == ["decode", "encode"]
    report = analyze_tflite(files["multi_signature"])
    assert sorted(op.subgraph for op in report.ops) == [0, 1]
    signatures = {s["key"]: s for s in report.signatures}
    assert signatures["decode"]["inputs"] == {"code": {"dtype": "float32", "shape": [-1, 4]}}
    assert signatures["encode"]["outputs"] == {"code": {"dtype": "float32", "shape": [1, 4]}}
    assert any("primary subgraph only" in note for note in report.notes)
    assert "signature 'encode'" in str(report)
    runner = keras_visrec.load_tflite(files["multi_signature"])
    x = np.array([[1.0, -2.0, 0.5]], "float32")
    code = runner.predict(x, signature="encode")
    assert code.shape == (1, 4) and (code >= 0).all()
    assert runner.predict(np.stack([code[0]] * 3), signature="decode").shape == (3, 3)
    assert runner.benchmark(runs=2, warmup=1)["runs"] == 2
    profile = profile_tflite(files["multi_signature"], rounds=2, warmup=1)
    assert [entry["op"] for entry in profile.entries] == ["FULLY_CONNECTED"]


def test_16x8_fp16_and_int8_weights_are_told_apart(files):
    sixteen = analyze_tflite(files["16x8"])
    assert sixteen.quantization == "16x8" and "int16" in sixteen.tensor_dtypes["activations"]
    assert "int8" in sixteen.tensor_dtypes["constants"]
    conv = next(op for op in sixteen.ops if op.op == "CONV_2D")
    assert conv.dtype == "int16"
    assert any("integer ops not taken by XNNPACK" in p and "CONV_2D" in p for p in sixteen.problems)
    assert any("not 8-bit quantized (int16 tensors)" in reason
               for entry in check_edgetpu(sixteen.ops).entries for reason in entry["reasons"])
    assert analyze_tflite(files["fp16"]).quantization == "fp16"
    assert "float16" in analyze_tflite(files["fp16"]).tensor_dtypes["constants"]
    dynamic = analyze_tflite(files["dynamic_int8"], runtime=False)
    assert dynamic.quantization == "dynamic" and dynamic.runtime == {}
    x = _images(2)
    expected = _conv_net().predict(x, verbose=0)
    for name, tolerance in (("16x8", 0.05), ("fp16", 0.01), ("dynamic_int8", 0.1)):
        runner = keras_visrec.load_tflite(files[name])
        np.testing.assert_allclose(runner.predict(x), expected, atol=tolerance, err_msg=name)
        assert runner.benchmark(runs=2, warmup=0)["min_ms"] > 0
    profile = profile_tflite(files["16x8"], rounds=2, warmup=1)
    assert {entry["dtype"] for entry in profile.entries} >= {"int16"}


def test_dynamic_shapes_are_reported_and_run_at_any_size(files):
    report = analyze_tflite(files["dynamic_shape"])
    assert report.dynamic and report.inputs[0]["shape_signature"] == [-1, -1, -1, 3]
    assert "dynamic input" in str(report)
    entry = check_edgetpu(report.ops).entries[0]
    assert any("dynamic tensor shape" in reason for reason in entry["reasons"])
    runner = keras_visrec.load_tflite(files["dynamic_shape"])
    for shape in ((2, 5, 7, 3), (1, 12, 4, 3)):
        x = np.random.default_rng(0).standard_normal(shape).astype("float32")
        assert runner.predict(x).shape == shape[:3] + (4,)
    assert runner.benchmark(x, runs=2, warmup=0)["runs"] == 2
    assert profile_tflite(files["dynamic_shape"], rounds=1, warmup=0).entries[0]["op"] == "CONV_2D"


def test_profile_times_a_custom_op_through_xnnpack(files):
    profile = profile_tflite(files["custom_xnnpack"], rounds=2, warmup=1)
    assert [(e["op"], e["xnnpack"]) for e in profile.entries] == [("Convolution2DTransposeBias", True)]
    builtin_only = profile_tflite(files["transpose_conv"], rounds=1, warmup=0, xnnpack=False)
    assert builtin_only.entries[0]["op"] == "TRANSPOSE_CONV"


def test_bench_tflite_command_on_a_custom_op_file(files, capsys):
    from keras_visrec.cli import main

    assert main(["bench-tflite", str(files["custom_xnnpack"]), "--runs", "2", "--warmup", "0", "--profile"]) == 0
    out = capsys.readouterr().out
    assert "p50_ms" in out and "Convolution2DTransposeBias" in out


def test_malformed_flatbuffers_raise_the_module_error(files, tmp_path):
    content = files["fp16"].read_bytes()
    with pytest.raises(TFLiteFileError, match="file identifier"):
        read_tflite(b"\0" * 4 + b"NOPE" + content[8:])
    with pytest.raises(TFLiteFileError, match="past the end"):
        read_tflite(content[: len(content) // 3])
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(content[:100])
    with pytest.raises(TFLiteFileError, match="broken.tflite"):
        analyze_tflite(broken)
    with pytest.raises(TFLiteFileError):
        profile_tflite(broken)
    with pytest.raises(FileNotFoundError):
        analyze_tflite(tmp_path / "missing.tflite")
