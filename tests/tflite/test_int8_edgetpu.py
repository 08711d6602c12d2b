"""int8 accuracy on real data (digits) and Edge TPU exports checked against Coral's op table."""

import keras
import numpy as np
import pytest

import keras_visrec
from keras_visrec.tflite.edgetpu import check_edgetpu, edgetpu_op_table, parse_compiler_log
from keras_visrec.tflite.export import export_tflite

pytest.importorskip("ai_edge_litert")


@pytest.fixture(scope="module")
def trained(digits32):
    """A tiny ConvNeXt trained briefly on the real handwritten digits (the demo task)."""
    (x_train, y_train), (x_test, y_test) = digits32
    keras.utils.set_random_seed(0)
    model = keras_visrec.ConvNeXt(depths=(1, 1, 1, 1), dims=(16, 32, 64, 128), input_shape=(32, 32, 3),
                                  classes=10, weights=None)
    model.compile(keras.optimizers.AdamW(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=5, batch_size=32, verbose=0)
    keras_top1 = float(np.mean(model.predict(x_test, verbose=0).argmax(1) == y_test))
    return model, (x_train, y_train), (x_test, y_test), keras_top1


@pytest.mark.slow
def test_int8_top1_within_one_point_of_fp32_with_full_int8_graph(trained, tmp_path):
    model, (x_train, _), (x_test, y_test), keras_top1 = trained
    assert keras_top1 > 0.8  # the check below is meaningful only on a model that learned something
    report = export_tflite(model, tmp_path / "digits_int8.tflite", quantization="int8",
                           representative_data=x_train[:128], validation_data=x_test[:32])
    runner = keras_visrec.load_tflite(report.path, num_threads=2)
    predictions = runner.predict(x_test).argmax(1)
    int8_top1 = float(np.mean(predictions == y_test))
    keras_predictions = model.predict(x_test, verbose=0).argmax(1)
    agreement = float(np.mean(predictions == keras_predictions))
    print(f"digits top-1: keras fp32 {keras_top1:.4f}, tflite int8 {int8_top1:.4f}, agreement {agreement:.4f}")
    assert abs(int8_top1 - keras_top1) <= 0.01
    assert agreement >= 0.99
    # every compute op is int8 except LayerNorm's per-pixel float island (variance + eps, RSQRT);
    # weights per output channel
    for op in report.ops:
        if op.op not in ("QUANTIZE", "DEQUANTIZE"):
            island = op.op in ("ADD", "RSQRT") and op.output_shapes[0][-1] == 1
            assert op.dtype == ("float32" if island else "int8"), (op.op, op.dtype, op.output_shapes)
    assert report.kernels["RSQRT"]["dtypes"] == ["float32"]
    tensors = runner.interpreter.get_tensor_details()
    per_channel = [t for t in tensors if len(t["quantization_parameters"]["scales"]) > 1]
    assert len(per_channel) >= 4 * 2 + 4  # pointwise + depthwise + stem/downsampling kernels
    # the heavy ops run on XNNPACK; where LiteRT 2.3's XNNPACK refuses the graph (residual branches
    # ~1e-4 of the trunk's scale, as after a short training from layer scale 1e-6) the report says
    # so and the runner falls back to builtin kernels
    if report.xnnpack_refused:
        assert not runner.xnnpack and any("XNNPACK" in problem for problem in report.problems)
    else:
        for op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MUL", "SUB", "ADD", "RSQRT"):
            assert report.kernels[op]["builtin"] == 0, report.kernels[op]


@pytest.mark.slow
def test_edgetpu_export_of_trained_model_is_fully_mapped_and_accurate(trained, tmp_path):
    model, (x_train, _), (x_test, y_test), keras_top1 = trained
    report = export_tflite(model, tmp_path / "digits_edgetpu.tflite", quantization="int8", target="edgetpu",
                           representative_data=x_train[:128], validation_data=x_test[:32])
    assert report.input_dtype == "uint8" and report.output_dtype == "uint8"
    assert report.edgetpu.all_mapped, str(report.edgetpu)
    assert "LOGISTIC" in report.op_histogram and "GELU" not in report.op_histogram
    runner = keras_visrec.load_tflite(report.path, xnnpack=not report.xnnpack_refused)
    edge_top1 = float(np.mean(runner.predict(x_test).argmax(1) == y_test))
    print(f"digits top-1: keras fp32 {keras_top1:.4f}, Edge TPU graph (uint8, tanh GELU) {edge_top1:.4f}")
    assert abs(edge_top1 - keras_top1) <= 0.015


@pytest.mark.parametrize("builder", ["ConvNeXtAtto", pytest.param("ConvNeXtFemto", marks=pytest.mark.slow)])
def test_atto_and_femto_map_every_op_on_the_edgetpu_table(builder, tmp_path, digits32):
    (x_train, _), _ = digits32
    images = np.repeat(np.repeat(x_train[:4], 2, axis=1), 2, axis=2)  # 64×64 real digits
    model = getattr(keras_visrec, builder)(input_shape=(64, 64, 3), classes=10)
    report = export_tflite(model, tmp_path / "m.tflite", quantization="int8", target="edgetpu",
                           representative_data=images, calibration_samples=4)
    print(report.edgetpu)
    assert report.edgetpu.all_mapped, str(report.edgetpu)
    assert report.edgetpu.first_unmapped is None
    assert report.edgetpu.min_runtime == 14  # RSQRT
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "RSQRT", "MEAN"} <= set(report.op_histogram)


def test_checker_names_the_channel_mean_that_stops_mapping(tmp_path):
    model = keras_visrec.ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), input_shape=(32, 32, 3), classes=10)
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    report = export_tflite(model, tmp_path / "m.tflite", quantization="int8", target="edgetpu",
                           representative_data=images, layernorm="reduce", gelu="exact")
    assert not report.edgetpu.all_mapped
    first = report.edgetpu.first_unmapped
    assert first["op"] == "MEAN" and "channel axis" in first["reasons"][0]
    reasons = {entry["op"]: entry["reasons"] for entry in report.edgetpu.fallback}
    assert "not on the Edge TPU op table" in reasons["GELU"][0]
    assert "mapping stops at op" in str(report)


def test_checker_flags_float_ops_and_large_batch():
    from keras_visrec.tflite.report import OpInfo

    ops = [
        OpInfo(0, "CONV_2D", ["int8", "int8", "int32"], ["int8"], [[1, 8, 8, 3]], [[1, 8, 8, 4]], [0], [1]),
        OpInfo(1, "ADD", ["float32", "float32"], ["float32"], [[1, 8, 8, 4]], [[1, 8, 8, 4]], [1], [2]),
        OpInfo(2, "MUL", ["int8", "int8"], ["int8"], [[2, 8, 8, 4]], [[2, 8, 8, 4]], [2], [3]),
        OpInfo(3, "MEAN", ["int8", "int32"], ["int8"], [[1, 8, 8, 4]], [[1, 4]], [3], [4], constants={"axes": [1, 2]}),
    ]
    report = check_edgetpu(ops)
    assert [e["mapped"] for e in report.entries] == [True, False, False, True]
    assert "not 8-bit quantized" in report.entries[1]["reasons"][0]
    assert "3 innermost" in report.entries[2]["reasons"][0]
    assert report.first_unmapped["index"] == 1


def test_op_table_cites_its_source_and_carries_limits():
    table = edgetpu_op_table()
    assert "coral.ai/docs/edgetpu/models-intro" in table["source"]
    assert table["ops"]["MEAN"]["limits"] == ["reduce_spatial_axes_only"]
    assert table["ops"]["RSQRT"]["runtime"] == 14
    for spec in table["ops"].values():
        for limit in spec["limits"]:
            assert limit in table["limits"]
    assert "GELU" not in table["ops"]


_SAMPLE_LOG = """Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 412 ms.

Input model: atto_int8.tflite
Input size: 3.62MiB
Output model: atto_int8_edgetpu.tflite
Output size: 3.81MiB
On-chip memory used for caching model parameters: 3.55MiB
On-chip memory remaining for caching model parameters: 4.21MiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 157
Operation log: atto_int8_edgetpu.log

Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of the model will instead run on the CPU, which is slower. If possible, consider updating your model to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.
Number of operations that will run on Edge TPU: 155
Number of operations that will run on CPU: 2

Operator                       Count      Status

CONV_2D                        48         Mapped to Edge TPU
DEPTHWISE_CONV_2D              12         Mapped to Edge TPU
RSQRT                          1          Operation is otherwise supported, but not mapped due to some unspecified limitation
SOFTMAX                        1          More than one subgraph is not supported
MUL                            95         Mapped to Edge TPU
"""


def test_compiler_log_parser_reads_counts_and_statuses():
    report = parse_compiler_log(_SAMPLE_LOG)
    assert report.version == "16.0.384591198" and report.success
    assert (report.total_ops, report.on_edgetpu, report.on_cpu, report.subgraphs) == (157, 155, 2, 1)
    assert report.output_model == "atto_int8_edgetpu.tflite"
    ops = {row["op"]: row for row in report.operators}
    assert ops["CONV_2D"]["count"] == 48 and ops["CONV_2D"]["mapped"]
    assert not ops["RSQRT"]["mapped"] and "unspecified limitation" in ops["RSQRT"]["status"]
    assert len(report.operators) == 5
    assert "155/157 ops on the Edge TPU" in str(report)
    failed = parse_compiler_log("Edge TPU Compiler version 16.0\nERROR: Didn't find op for builtin opcode 'GELU'\n")
    assert not failed.success and failed.operators == []
    with pytest.raises(TypeError, match="text"):
        parse_compiler_log(b"bytes")


def test_edgetpu_rejects_a_layer_without_int8_kernels(tmp_path):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 1, name="conv")(inputs)
    x = keras.layers.Lambda(lambda t: keras.ops.cumsum(t, axis=-1), name="cumsum")(x)
    model = keras.Model(inputs, x)
    images = np.random.default_rng(0).uniform(0, 255, (4, 8, 8, 3)).astype("float32")
    with pytest.raises(ValueError, match="cannot be fully integer-quantized"):
        export_tflite(model, tmp_path / "m.tflite", quantization="int8", target="edgetpu", representative_data=images)
    assert not (tmp_path / "m.tflite").exists()
    # on the CPU target the same layer stays in float, and the report says where
    report = export_tflite(model, tmp_path / "m.tflite", quantization="int8", representative_data=images)
    assert any("CUMSUM" in note for note in report.precision + report.problems)
