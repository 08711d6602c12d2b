"""export_tflite on tiny ConvNeXts: float parity, graph shape, folds, report, bad input."""

import json
import os

import keras
import numpy as np
import pytest

import keras_visrec
from keras_visrec.tflite.export import export_tflite
from keras_visrec.tflite.prepare import prepare_graph

pytest.importorskip("ai_edge_litert")

_DYNAMIC_OPS = {"SHAPE", "GATHER", "REDUCE_PROD", "PACK", "BATCH_MATMUL", "RESHAPE", "STRIDED_SLICE_DYNAMIC"}


def _tiny(seed=1, **kwargs):
    """A tiny ConvNeXt with non-trivial LayerNorm and layer-scale values, so folds are exercised."""
    keras.utils.set_random_seed(seed)
    kwargs.setdefault("classifier_activation", None)
    model = keras_visrec.ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), input_shape=(32, 32, 3), classes=10,
                                  layer_scale_init_value=0.5, **kwargs)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.LayerNormalization):
            gamma, beta = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape).astype("float32"),
                               rng.normal(0, 0.2, beta.shape).astype("float32")])
    return model


@pytest.fixture(scope="module")
def tiny_model():
    return _tiny()


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")


def test_fp32_export_matches_keras_with_static_conv_graph(tiny_model, images, tmp_path):
    report = export_tflite(tiny_model, tmp_path / "tiny.tflite", validation_data=images)
    assert report.agreement["max_abs_diff"] < 1e-4
    assert report.agreement["top1_agreement"] == 1.0
    ops = set(report.op_histogram)
    assert not ops & _DYNAMIC_OPS, ops
    assert "GELU" in ops and "CONV_2D" in ops
    # every pointwise layer is a CONV_2D: stem + 3 downsampling + 2 per block; the patchify
    # convs (stem 4x4/4, downsampling 2x2/2) are SPACE_TO_DEPTH + 1x1 CONV_2D
    assert report.op_histogram["CONV_2D"] == 4 + 2 * 4
    assert report.op_histogram["SPACE_TO_DEPTH"] == 4
    assert report.input_dtype == "float32"
    runner = keras_visrec.load_tflite(report.path)
    assert runner.input_shape == (1, 32, 32, 3)
    folds = " ".join(report.folds)
    assert "preprocessing" in folds and "layer scale" in folds and "block_0_layernorm scale/shift" in folds
    assert report.xnnpack_fraction == 1.0, report.kernels


def test_depthwise_split_is_exact_and_removes_large_kernels(tiny_model, images):
    import tensorflow as tf

    split = prepare_graph(tiny_model, layernorm="reduce", gelu="exact", depthwise="split")
    single = prepare_graph(tiny_model, layernorm="reduce", gelu="exact", depthwise="single")
    conv = prepare_graph(tiny_model, layernorm="conv", gelu="exact", depthwise="single")
    cpu = prepare_graph(tiny_model, layernorm="reduce", depthwise="split", float_islands=True, patchify=True)
    expected = tiny_model.predict(images[:1], verbose=0)
    for graph in (split, single, conv, cpu):
        output = graph.function(tf.constant(images[:1]))
        output = output[0] if isinstance(output, (list, tuple)) else output
        np.testing.assert_allclose(output.numpy(), expected, atol=1e-4)
    assert "row-band" in split.lowered["DepthwiseConv2D"] and split.unruled == {}  # every layer has a rule
    assert cpu.lowered["Conv2D (k == stride)"] == "SPACE_TO_DEPTH + 1x1 CONV_2D"
    assert len(cpu.float_nodes) == 2 * 9 and not split.float_nodes  # 9 LayerNorms: eps-add and rsqrt each


def test_report_prints_and_serialises(tiny_model, tmp_path):
    report = export_tflite(tiny_model, tmp_path / "tiny.tflite", quantization="dynamic")
    text = str(report)
    assert "op type" in text and "CONV_2D" in text and "agreement with Keras" in text
    data = json.loads(report.to_json(tmp_path / "report.json"))
    assert data["quantization"] == "dynamic" and data["size_bytes"] == os.path.getsize(report.path)
    assert json.load(open(tmp_path / "report.json"))["op_histogram"] == report.op_histogram
    assert report.agreement["max_abs_diff"] < 0.1


def test_fp16_export_is_smaller_and_close(tiny_model, images, tmp_path):
    fp32 = export_tflite(tiny_model, tmp_path / "a.tflite", validation_data=images)
    fp16 = export_tflite(tiny_model, tmp_path / "b.tflite", quantization="fp16", validation_data=images)
    assert fp16.size_bytes < 0.7 * fp32.size_bytes
    assert fp16.agreement["max_abs_diff"] < 1e-2


def test_representative_data_forms_are_accepted(tiny_model, images, tmp_path):
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((images, np.zeros(len(images)))).batch(4)
    generator = (image for image in images)
    for index, data in enumerate((dataset, generator)):
        report = export_tflite(tiny_model, tmp_path / f"m{index}.tflite", quantization="int8",
                               representative_data=data, calibration_samples=8)
        assert report.agreement["samples"] == 8
        assert report.input_dtype == "float32"
    # with realistic layer scales every compute op of the int8 graph runs on XNNPACK except the
    # LUT-based GELU and the softmax (LayerNorm's eps-add and RSQRT run as a float island)
    assert {op for op, row in report.kernels.items() if row["builtin"]} <= {"GELU", "SOFTMAX"}
    assert report.kernels["CONV_2D"]["builtin"] == 0 and report.kernels["DEPTHWISE_CONV_2D"]["builtin"] == 0


@pytest.mark.parametrize("io_dtype", ["float32", "int8", "uint8"])
def test_int8_float_islands_put_layernorm_statistics_on_xnnpack(tiny_model, images, tmp_path, io_dtype):
    islands = export_tflite(tiny_model, tmp_path / "islands.tflite", quantization="int8", representative_data=images,
                            io_dtype=io_dtype)
    assert islands.input_dtype == io_dtype and islands.output_dtype == io_dtype
    rsqrt = [op for op in islands.ops if op.op == "RSQRT"]
    assert len(rsqrt) == 9 and all(op.dtype == "float32" and op.xnnpack for op in rsqrt)
    floats = [op for op in islands.ops if op.dtype == "float32" and op.op not in ("QUANTIZE", "DEQUANTIZE")]
    assert {op.op for op in floats} == {"ADD", "RSQRT"} and all(op.output_shapes[0][-1] == 1 for op in floats)
    assert any("float islands: 9 LayerNorm" in note for note in islands.precision)
    assert not any("float32 ops left" in problem for problem in islands.problems)
    assert islands.agreement["max_abs_diff"] < 0.05 and "float_islands=True" in islands.lowered["forms"]
    if io_dtype != "float32":
        return
    plain = export_tflite(tiny_model, tmp_path / "plain.tflite", quantization="int8", representative_data=images,
                          float_islands=False)
    assert plain.kernels["RSQRT"] == {"count": 9, "xnnpack": 0, "builtin": 9, "dtypes": ["int8"]}
    assert "float_islands=False" in plain.lowered["forms"]
    # the islands change only the precision of the per-pixel statistics
    assert np.abs(islands.agreement["max_abs_diff"] - plain.agreement["max_abs_diff"]) < 0.02


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(quantization="int4"), ValueError, "quantization"),
        (dict(target="tpu"), ValueError, "target"),
        (dict(target="edgetpu"), ValueError, "quantization='int8'"),
        (dict(quantization="int8"), ValueError, "representative_data"),
        (dict(quantization="int8", representative_data=np.zeros((4, 64, 64, 3))), ValueError, r"\(32, 32, 3\)"),
        (dict(quantization="int8", representative_data=np.array([["a"]])), TypeError, "real-valued"),
        (dict(quantization="int8", representative_data=42), TypeError, "representative_data"),
        (dict(io_dtype="uint8"), ValueError, "io_dtype"),
        (dict(layernorm="rms"), ValueError, "layernorm"),
        (dict(float_islands="yes"), ValueError, "float_islands"),
        (dict(patchify="on"), ValueError, "patchify"),
        (dict(quantization="int8", target="edgetpu", float_islands=True, representative_data=np.zeros((2, 32, 32, 3))),
         ValueError, "float_islands"),
    ],
)
def test_bad_arguments_raise_clear_errors_and_write_nothing(tiny_model, tmp_path, kwargs, error, match):
    path = tmp_path / "bad.tflite"
    with pytest.raises(error, match=match):
        export_tflite(tiny_model, path, **kwargs)
    assert os.listdir(tmp_path) == []


def test_missing_output_directory_and_dynamic_model(tiny_model, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_tflite(tiny_model, tmp_path / "nope" / "m.tflite")
    dynamic = keras_visrec.ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), include_top=False)
    with pytest.raises(ValueError, match="static"):
        export_tflite(dynamic, tmp_path / "m.tflite")
    assert os.listdir(tmp_path) == []


def test_layers_called_as_is_have_their_variables_frozen_convnext_v2(tmp_path):
    model = keras_visrec.ConvNeXtV2Atto(input_shape=(32, 32, 3), classes=10, classifier_activation=None)
    for layer in model.layers:
        if type(layer).__name__ == "GRN":
            layer.set_weights([np.full(w.shape, 0.3, "float32") for w in layer.get_weights()])
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    report = export_tflite(model, tmp_path / "v2.tflite", validation_data=images)
    assert report.lowered["GRN"] == "called as is (converts to builtin ops)"  # GRN's rule: its keras.ops call
    assert not any("no export rule" in problem for problem in report.problems)
    assert report.agreement["max_abs_diff"] < 1e-4


def test_float_islands_fall_back_with_a_warning_without_a_node_denylist(tiny_model, images, tmp_path, monkeypatch):
    from keras_visrec.tflite import export

    monkeypatch.setattr(export, "_has_node_denylist", lambda: False)
    with pytest.warns(RuntimeWarning, match="without float islands"):
        report = export_tflite(tiny_model, tmp_path / "m.tflite", quantization="int8", representative_data=images)
    assert report.kernels["RSQRT"]["dtypes"] == ["int8"]
    assert not any("float islands" in note for note in report.precision)


def test_signatures_export_several_functions_over_one_set_of_weights(tmp_path):
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 4, 3))
    body = keras.Model(inputs, keras.layers.Conv2D(5, 3, padding="same", name="conv")(inputs), name="body")
    head = keras.layers.Dense(2, name="head")
    head.build((None, 4, 4, 5))
    holder = keras.Model(inputs, head(body(inputs)), name="holder")

    @tf.function(input_signature=[tf.TensorSpec((1, 4, 4, 3), tf.float32, name="image")])
    def features(image):
        return {"features": body(image)}

    @tf.function(input_signature=[tf.TensorSpec((1, 4, 4, 5), tf.float32, name="features")])
    def logits(features):
        return {"logits": head(features)}

    report = export_tflite(holder, tmp_path / "two.tflite", signatures={"features": features, "logits": logits})
    assert sorted(report.agreement["signatures"]) == ["features", "logits"]
    assert report.agreement["max_abs_diff"] < 1e-5 and report.size_bytes == os.path.getsize(report.path)
    runner = keras_visrec.load_tflite(report.path)
    x = np.random.default_rng(1).normal(size=(1, 4, 4, 3)).astype("float32")
    chained = runner.predict(runner.predict({"image": x}, signature="features"), signature="logits")
    np.testing.assert_allclose(chained, holder.predict(x, verbose=0), atol=1e-5)
    with pytest.raises(ValueError, match="Graph forms"):
        export_tflite(holder, tmp_path / "x.tflite", signatures={"logits": logits}, gelu="tanh")
    with pytest.raises(TypeError, match="input_signature"):
        export_tflite(holder, tmp_path / "x.tflite", signatures={"logits": lambda f: f})
    assert sorted(os.listdir(tmp_path)) == ["two.tflite"]


def test_sparse_export_stores_pruned_kernels_sparsely(tmp_path):
    model = _tiny(seed=2)
    for layer in model.layers:  # zero 90 % of every pointwise kernel, as magnitude pruning would
        if layer.name.endswith(("pointwise_conv_1", "pointwise_conv_2")):
            kernel, bias = layer.get_weights()
            kernel[np.abs(kernel) < np.quantile(np.abs(kernel), 0.9)] = 0.0
            layer.set_weights([kernel, bias])
    sparse = export_tflite(model, tmp_path / "sparse.tflite", sparse=True)
    # stored densely the float32 weights alone take 4 bytes per parameter (the dense file: 250 kB)
    assert sparse.size_bytes < 0.5 * 4 * model.count_params(), sparse.size_bytes
    assert sparse.agreement["max_abs_diff"] < 1e-4
    assert any(note.startswith("sparse: ") for note in sparse.precision) and "sparse=True" in sparse.lowered["forms"]
    with pytest.raises(ValueError, match="sparse"):
        export_tflite(model, tmp_path / "x.tflite", sparse="yes")
