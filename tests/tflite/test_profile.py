"""profile_tflite / single_op_models: one-op cuts compute what the node computes in the full graph."""

import keras
import numpy as np
import pytest

import keras_visrec
from keras_visrec.tflite.export import export_tflite
from keras_visrec.tflite.profile import profile_tflite, single_op_models
from keras_visrec.tflite.report import read_ops

pytest.importorskip("ai_edge_litert")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny ConvNeXt exported in fp32 and int8 (float islands on, the CPU default)."""
    keras.utils.set_random_seed(3)
    model = keras_visrec.ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), input_shape=(32, 32, 3), classes=10,
                                  layer_scale_init_value=0.5)
    images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    folder = tmp_path_factory.mktemp("profile")
    fp32 = export_tflite(model, folder / "fp32.tflite")
    int8 = export_tflite(model, folder / "int8.tflite", quantization="int8", representative_data=images)
    return fp32, int8, images


@pytest.mark.parametrize("which", [0, 1], ids=["fp32", "int8"])
def test_single_op_models_reproduce_every_node_of_the_graph(exported, which):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    report, images = exported[which], exported[2]
    content = open(report.path, "rb").read()
    plain = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    full = Interpreter(model_content=content, experimental_preserve_all_tensors=True,
                       experimental_op_resolver_type=plain)
    full.allocate_tensors()
    full.set_tensor(full.get_input_details()[0]["index"], images[:1])
    full.invoke()
    ops = read_ops(content, with_xnnpack=False)
    names = {detail["index"]: detail["name"] for detail in full.get_tensor_details()}
    cuts = list(single_op_models(content))
    assert [index for index, _, _ in cuts] == [op.index for op in ops]
    for (index, _, single), op in zip(cuts, ops):
        interpreter = Interpreter(model_content=single, experimental_op_resolver_type=plain)
        interpreter.allocate_tensors()
        by_name = {names[t]: t for t in op.inputs}
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"], full.get_tensor(by_name[detail["name"]]))
        interpreter.invoke()
        got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        np.testing.assert_allclose(got, full.get_tensor(op.outputs[0]), rtol=1e-5, atol=1e-5, err_msg=op.op)
    assert len(cuts) == len(report.ops)


def test_profile_times_every_node_and_sees_delegation(exported):
    fp32, int8, _ = exported
    profiles = profile_tflite({"fp32": fp32.path, "int8": int8.path}, num_threads=1, rounds=2, warmup=1)
    for name, report in (("fp32", fp32), ("int8", int8)):
        profile = profiles[name]
        table = profile.by_type()
        assert {op: row["count"] for op, row in table.items()} == report.op_histogram
        assert all(entry["ms"] >= entry["min_ms"] > 0 for entry in profile.entries)
        assert profile.total_ms > 0 and profile.whole_model_ms > 0
        assert abs(sum(row["share"] for row in table.values()) - 1.0) < 1e-9
        assert "op type" in profile.table() and "CONV_2D" in str(profile)
    assert all(row["builtin"] == 0 for row in profiles["fp32"].by_type().values())
    int8_table = profiles["int8"].by_type()
    # the float island puts LayerNorm's RSQRT on XNNPACK; int8 GELU has only a builtin kernel
    assert int8_table["RSQRT"]["xnnpack"] == int8_table["RSQRT"]["count"]
    assert int8_table["GELU"]["builtin"] == int8_table["GELU"]["count"]
    assert int8_table["CONV_2D"]["builtin"] == 0


def test_profile_rejects_bad_arguments(exported, tmp_path):
    fp32, _, _ = exported
    with pytest.raises(ValueError, match="num_threads"):
        profile_tflite(fp32.path, num_threads=0)
    with pytest.raises(ValueError, match="rounds"):
        profile_tflite(fp32.path, rounds=0)
    with pytest.raises(TypeError, match="paths"):
        profile_tflite([fp32.path])
    with pytest.raises(FileNotFoundError, match="missing.tflite"):
        profile_tflite(tmp_path / "missing.tflite")
