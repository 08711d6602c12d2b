"""CIFAR nets of the pruning study: parameter and MAC counts against closed-form counts derived from
the official configurations (and the papers' rounded figures), names, the keras.applications
arguments, deprecated names, custom layers, surgery on the padded graph, bad input. Parity with the
official PyTorch networks: ``tests/test_cifar_official.py``."""

import keras
import numpy as np
import pytest

import keras_visrec
from keras_visrec import cifar
from keras_visrec.pruning import surgery

_VGG16 = cifar.VGG_CONFIGS["vgg16"]


def _trainable(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def _vgg_counts(cfg, head, classes=10, size=32):
    macs = params = 0
    cin, side = 3, size
    for c in cfg:
        if c == "M":
            side //= 2
            continue
        macs += 9 * cin * c * side * side
        params += 9 * cin * c + 2 * c
        cin = c
    flat = cin * (side // 2) ** 2
    if head == "l1":
        macs += flat * 512 + 512 * classes
        params += flat * 512 + 512 + 2 * 512 + 512 * classes + classes
    else:
        macs += flat * classes
        params += flat * classes + classes
    return macs, params


def _resnet_counts(depth, widths=None):
    n = (depth - 2) // 6
    widths = widths or [16] * n + [32] * n + [64] * n
    macs, params, cin, side = 27 * 16 * 1024, 27 * 16 + 32, 16, 32
    for j, w in enumerate(widths):
        planes = (16, 32, 64)[j // n]
        if j % n == 0 and j >= n:
            side //= 2
        macs += (9 * cin * w + 9 * w * planes) * side * side
        params += 9 * cin * w + 2 * w + 9 * w * planes + 2 * planes
        cin = planes
    return macs + 640, params + 650


def _preresnet_counts(depth):
    n = (depth - 2) // 9
    cfg = cifar.preresnet_default_cfg(depth)
    macs, params, cin, side = 27 * 16 * 1024, 27 * 16, 16, 32
    for j in range(3 * n):
        planes = (16, 32, 64)[j // n]
        sel, c1, c2 = cfg[3 * j: 3 * j + 3]
        stride = 2 if j % n == 0 and j >= n else 1
        out_side = side // stride
        macs += sel * c1 * side * side + 9 * c1 * c2 * out_side ** 2 + c2 * 4 * planes * out_side ** 2
        params += 2 * cin + sel * c1 + 2 * c1 + 9 * c1 * c2 + 2 * c2 + c2 * 4 * planes
        if j % n == 0:
            macs += cin * 4 * planes * out_side ** 2
            params += cin * 4 * planes
        cin, side = 4 * planes, out_side
    return macs + 2560, params + 2 * 256 + 2570


def _densenet_counts(depth=40, k=12):
    n = (depth - 4) // 3
    macs, params, c, side = 27 * 2 * k * 1024, 27 * 2 * k, 2 * k, 32
    for dense in range(3):
        for _ in range(n):
            macs += 9 * c * k * side * side
            params += 2 * c + 9 * c * k
            c += k
        if dense < 2:
            macs += c * c * side * side
            params += 2 * c + c * c
            side //= 2
    return macs + c * 10, params + 2 * c + c * 10 + 10


@pytest.mark.parametrize("builder, expected", [
    (lambda: cifar.VGG16CIFAR(), lambda: _vgg_counts(_VGG16, "l1")),
    (lambda: cifar.VGG16CIFAR(head="slimming"), lambda: _vgg_counts(_VGG16, "slimming")),
    (lambda: cifar.VGG19CIFAR(head="slimming"), lambda: _vgg_counts(cifar.VGG_CONFIGS["vgg19"], "slimming")),
    (lambda: cifar.VGG19CIFAR(), lambda: _vgg_counts(cifar.VGG_CONFIGS["vgg19"], "l1")),
    (lambda: cifar.ResNet56CIFAR(), lambda: _resnet_counts(56)),
    (lambda: cifar.DenseNet40CIFAR(), lambda: _densenet_counts()),
])
def test_counts_match_official_configs(builder, expected):
    model = builder()
    macs, params = expected()
    assert keras_visrec.count_flops(model).total == macs
    assert _trainable(model) == params


@pytest.mark.slow
@pytest.mark.parametrize("builder, expected", [
    (lambda: cifar.ResNet110CIFAR(), lambda: _resnet_counts(110)),
    (lambda: cifar.PreResNet164CIFAR(), lambda: _preresnet_counts(164)),
])
def test_deep_counts_match_official_configs(builder, expected):
    model = builder()
    macs, params = expected()
    assert keras_visrec.count_flops(model).total == macs
    assert _trainable(model) == params


def test_counts_match_papers_rounded_figures():
    # Li et al. 2017, Table 1/2 and Liu et al. 2017 (slimming reports FLOPs as 2 × MACs)
    assert _vgg_counts(_VGG16, "l1")[0] == pytest.approx(3.13e8, rel=5e-3)
    assert _vgg_counts(_VGG16, "l1")[1] == pytest.approx(1.5e7, rel=5e-3)
    assert _resnet_counts(56)[0] == pytest.approx(1.25e8, rel=5e-3)
    assert _resnet_counts(56)[1] == pytest.approx(8.5e5, rel=5e-3)
    assert _resnet_counts(110)[0] == pytest.approx(2.53e8, rel=5e-3)
    assert _resnet_counts(110)[1] == pytest.approx(1.72e6, rel=1e-2)
    assert _vgg_counts(cifar.VGG_CONFIGS["vgg19"], "slimming")[1] == pytest.approx(20.04e6, rel=1e-3)
    assert 2 * _vgg_counts(cifar.VGG_CONFIGS["vgg19"], "slimming")[0] == pytest.approx(7.97e8, rel=5e-3)
    assert _preresnet_counts(164)[1] == pytest.approx(1.70e6, rel=5e-3)


def test_registered_in_cifar_family():
    names = keras_visrec.list_models(family="cifar")
    assert {"vgg16_cifar", "vgg19_cifar", "resnet56_cifar", "resnet110_cifar", "preresnet164_cifar",
            "densenet40_cifar"} <= set(names)


def test_layer_names_are_pinned():
    model = cifar.ResNetCIFAR(8, name="r")
    names = {layer.name for layer in model.layers}
    assert {"r_conv_1", "r_stage_1_block_0_conv_1_pad", "r_stage_1_block_0_conv_1", "r_stage_1_block_0_shortcut_pool",
            "r_stage_1_block_0_shortcut", "r_stage_2_block_0_add", "r_avgpool", "r_classifier", "predictions"} <= names
    pre = cifar.PreResNetCIFAR(11, name="p")
    assert {"p_stage_0_block_0_select", "p_stage_1_block_0_conv_2_pad", "p_stage_2_block_0_downsample",
            "p_select"} <= {layer.name for layer in pre.layers}


def test_shortcut_a_subsamples_and_appends_zero_channels():
    x = np.arange(2 * 4 * 4 * 3, dtype="float32").reshape(2, 4, 4, 3)
    y = keras.ops.convert_to_numpy(cifar.ShortcutA(5, 2)(x))
    assert y.shape == (2, 2, 2, 5)
    np.testing.assert_array_equal(y[..., :3], x[:, ::2, ::2, :])
    assert not y[..., 3:].any()
    same = keras.ops.convert_to_numpy(cifar.ShortcutA(4, strides=1)(x))
    np.testing.assert_array_equal(same[..., :3], x)
    assert same.shape == (2, 4, 4, 4) and not same[..., 3].any()


def test_channel_selection_and_serialisation(tmp_path):
    model = cifar.DenseNetCIFAR(7, [4, 2, 9, 3, 12, 15], growth_rate=3, name="d")
    assert model.get_layer("d_dense_0_layer_0_select").indices == [0, 1, 2, 3]
    assert model.get_layer("d_transition_0_select").indices == [0, 1]
    assert model.get_layer("d_dense_1_layer_0_select").indices is None
    assert model.get_layer("d_dense_0_layer_0_conv").kernel.shape == (3, 3, 4, 3)
    path = str(tmp_path / "d.keras")
    model.save(path)
    again = keras.models.load_model(path)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_keras_applications_arguments():
    headless = cifar.ResNetCIFAR(8, include_top=False)
    assert headless.output_shape == (None, None, None, 64)
    assert cifar.ResNetCIFAR(8, include_top=False, pooling="max").output_shape == (None, 64)
    pre = cifar.PreResNetCIFAR(11, include_top=False, pooling="avg", input_shape=(24, 24, 3))
    assert pre.output_shape == (None, 256)
    assert cifar.VGG16CIFAR(include_top=False).output_shape == (None, None, None, 512)
    assert cifar.DenseNet40CIFAR(classes=np.int64(100), classifier_activation=None).output_shape == (None, 100)
    tensor = keras.Input((16, 16, 3))
    model = cifar.VGGCIFAR([4, "M", 8], input_tensor=tensor, include_preprocessing=False, name="v")
    assert model.inputs[0] is tensor and model.output_shape == (None, 10)
    assert "v_preprocessing" not in {layer.name for layer in model.layers}
    logits = cifar.ResNet56CIFAR(classifier_activation=None).get_layer("predictions")
    assert logits.activation.__name__ == "linear"
    # the same default head for both VGG variants (the L1-norm code's); slimming configs pass head="slimming"
    for builder in (cifar.VGG16CIFAR, cifar.VGG19CIFAR):
        vgg = builder()
        assert {f"{vgg.name}_fc_1", f"{vgg.name}_fc_1_bn"} <= {layer.name for layer in vgg.layers}


def test_registered_builders_reach_the_same_networks():
    model = keras_visrec.get_model("resnet110_cifar", classes=100, include_top=True)
    assert model.name == "resnet110" and model.output_shape == (None, 100)
    assert keras_visrec.models.model_family("vgg19_cifar") == "cifar"
    assert cifar.ResNet56CIFAR(name="r").count_params() == cifar.ResNetCIFAR(56, name="r").count_params()


def test_old_names_warn_and_still_build():
    for old, new, args in ((cifar.CIFARVGG, "VGGCIFAR", ([4, "M", 4],)), (cifar.CIFARResNet, "ResNetCIFAR", (8,)),
                           (cifar.CIFARPreResNet, "PreResNetCIFAR", (11,)),
                           (cifar.CIFARDenseNet, "DenseNetCIFAR", (7,))):
        with pytest.deprecated_call(match=f"{old.__name__} is deprecated .* use keras_visrec.{new}"):
            model = old(*args, input_shape=(8, 8, 3) if old is cifar.CIFARVGG else None)
        assert model.output_shape == (None, 10)
    assert keras_visrec.CIFARResNet is cifar.CIFARResNet and keras_visrec.ResNetCIFAR is cifar.ResNetCIFAR


def test_every_conv_starts_from_its_own_seeded_kernel():
    keras.utils.set_random_seed(5)
    model = cifar.ResNetCIFAR(8, name="r")
    keras.utils.set_random_seed(5)
    again = cifar.ResNetCIFAR(8, name="r")
    kernels = [keras.ops.convert_to_numpy(model.get_layer(f"r_stage_0_block_0_conv_{i}").kernel) for i in (1, 2)]
    assert not np.array_equal(*kernels)  # same shape, independent draws
    repeated = keras.ops.convert_to_numpy(again.get_layer("r_stage_0_block_0_conv_1").kernel)
    np.testing.assert_array_equal(kernels[0], repeated)
    assert np.std(kernels[0]) == pytest.approx(np.sqrt(2.0 / (9 * 16)), rel=0.2)  # He over fan-out


def test_l1_pruning_keeps_the_symmetric_padding():
    model = cifar.ResNetCIFAR(8, name="r", classifier_activation=None)
    pruned = surgery.prune_channels(model, keep={"r_stage_1_block_0_conv_1": list(range(20)),
                                                 "r_stage_0_block_0_conv_1": [0, 2, 4, 6, 8, 10, 12, 14]})
    pad = pruned.get_layer("r_stage_1_block_0_conv_1_pad")
    assert isinstance(pad, keras.layers.ZeroPadding2D) and tuple(map(tuple, pad.padding)) == ((1, 1), (1, 1))
    assert pruned.get_layer("r_stage_1_block_0_conv_1").padding == "valid"
    assert pruned.get_layer("r_stage_1_block_0_conv_1").filters == 20
    assert isinstance(pruned.get_layer("r_stage_1_block_0_shortcut_pool"), keras.layers.AveragePooling2D)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    assert np.isfinite(pruned.predict(x, verbose=0)).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="head"):
        cifar.VGG16CIFAR(head="fc")
    with pytest.raises(ValueError, match="depth"):
        cifar.ResNetCIFAR(57)
    with pytest.raises(ValueError, match="cfg"):
        cifar.ResNetCIFAR(20, [16] * 8)
    with pytest.raises(ValueError, match="shortcut"):
        cifar.ResNetCIFAR(20, shortcut="C")
    with pytest.raises(ValueError, match="input_shape"):
        cifar.VGG16CIFAR(input_shape=(40, 40, 3))
    with pytest.raises(ValueError, match="fixed height and width"):
        cifar.VGG16CIFAR(input_shape=(None, None, 3))
    with pytest.raises(ValueError, match="multiples of 4"):
        cifar.ResNet56CIFAR(input_shape=(30, 30, 3))
    with pytest.raises(ValueError, match="classes"):
        cifar.DenseNetCIFAR(10, classes=0)
    with pytest.raises(ValueError, match="pooling"):
        cifar.ResNet56CIFAR(include_top=False, pooling="mean")
    with pytest.raises(ValueError, match="classifier_activation"):
        cifar.ResNet56CIFAR(classifier_activation="nope")
    with pytest.raises(ValueError, match="name"):
        cifar.ResNet56CIFAR(name="")
    with pytest.raises(TypeError, match="unexpected keyword argument.*'depth'"):
        cifar.ResNet56CIFAR(depth=20)
    with pytest.raises(FileNotFoundError, match="weights"):
        cifar.ResNet56CIFAR(weights="missing.pth")
    with pytest.raises(ValueError, match="Unknown zoo id"):
        cifar.ResNet56CIFAR(weights="resnet56_cifar.nowhere")
