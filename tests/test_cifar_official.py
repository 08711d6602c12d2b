"""The CIFAR nets compute the official networks' function (Eric-mingjie/rethinking-network-pruning).

Small PyTorch networks written here after the official ``cifar/*/models/*.py`` (module paths, padding,
the option-A shortcut of ``l1-norm-pruning/models/resnet.py: downsample_basic_block``, channel
selection) get every weight and BN statistic randomised, are saved with ``torch.save`` the way the
official scripts save them, and load into our builders through ``weights=``; logits must agree to
1e-4 with BN in inference mode. A structural check covers every family that mirrors PyTorch: no
strided conv uses TensorFlow's one-sided ``"same"`` padding.
"""

import math

import keras
import numpy as np
import pytest

from keras_visrec import cifar

TOLERANCE = 1e-4


# ---- the official networks, small (written after the official files) ---------------------------

def _torch():
    return pytest.importorskip("torch")


def _official_modules():
    torch = _torch()
    nn = torch.nn

    class ChannelSelection(nn.Module):  # network-slimming/models/channel_selection.py
        def __init__(self, channels):
            super().__init__()
            self.indexes = nn.Parameter(torch.ones(channels))

        def forward(self, x):
            keep = torch.nonzero(self.indexes.data).flatten()
            return x[:, keep]

    class VGG(nn.Module):  # l1-norm-pruning/models/vgg.py (head "l1"), network-slimming/models/vgg.py
        def __init__(self, cfg, head, classes):
            super().__init__()
            layers, cin = [], 3
            for v in cfg:
                if v == "M":
                    layers.append(nn.MaxPool2d(2, 2))
                else:
                    layers += [nn.Conv2d(cin, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU(True)]
                    cin = v
            self.feature = nn.Sequential(*layers)
            if head == "l1":
                self.classifier = nn.Sequential(nn.Linear(cin, 512), nn.BatchNorm1d(512), nn.ReLU(True),
                                                nn.Linear(512, classes))
            else:
                self.classifier = nn.Linear(cin, classes)

        def forward(self, x):
            x = nn.AvgPool2d(2)(self.feature(x))
            return self.classifier(x.view(x.size(0), -1))

    class BasicBlock(nn.Module):  # l1-norm-pruning/models/resnet.py; option B: weight-level's downsample
        def __init__(self, cin, planes, width, stride, shortcut):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.planes, self.kind = planes, shortcut if (stride != 1 or cin != planes) else None
            if self.kind == "B":
                self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

        def forward(self, x):
            out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            residual = x
            if self.kind == "A":  # downsample_basic_block
                residual = nn.AvgPool2d(2, 2)(x)
                zeros = torch.zeros(x.size(0), self.planes - x.size(1), residual.size(2), residual.size(3))
                residual = torch.cat([residual, zeros], 1)
            elif self.kind == "B":
                residual = self.downsample(x)
            return torch.relu(out + residual)

    class ResNet(nn.Module):
        def __init__(self, depth, cfg, shortcut, classes):
            super().__init__()
            n = (depth - 2) // 6
            self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            cin = 16
            for s, planes in enumerate((16, 32, 64)):
                blocks = []
                for b in range(n):
                    blocks.append(BasicBlock(cin, planes, cfg[s * n + b], 2 if s and not b else 1, shortcut))
                    cin = planes
                setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
            self.fc = nn.Linear(64, classes)

        def forward(self, x):
            x = torch.relu(self.bn1(self.conv1(x)))
            x = self.layer3(self.layer2(self.layer1(x)))
            return self.fc(x.mean((2, 3)))

    class Bottleneck(nn.Module):  # network-slimming/models/preresnet.py
        def __init__(self, cin, planes, cfg, stride, downsample):
            super().__init__()
            self.bn1 = nn.BatchNorm2d(cin)
            self.select = ChannelSelection(cin)
            self.conv1 = nn.Conv2d(cfg[0], cfg[1], 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cfg[1])
            self.conv2 = nn.Conv2d(cfg[1], cfg[2], 3, stride, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(cfg[2])
            self.conv3 = nn.Conv2d(cfg[2], planes * 4, 1, bias=False)
            if downsample:
                self.downsample = nn.Sequential(nn.Conv2d(cin, planes * 4, 1, stride, bias=False))

        def forward(self, x):
            out = self.conv1(torch.relu(self.select(self.bn1(x))))
            out = self.conv2(torch.relu(self.bn2(out)))
            out = self.conv3(torch.relu(self.bn3(out)))
            return out + (self.downsample(x) if hasattr(self, "downsample") else x)

    class PreResNet(nn.Module):
        def __init__(self, depth, cfg, classes):
            super().__init__()
            n = (depth - 2) // 9
            self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
            cin = 16
            for s, planes in enumerate((16, 32, 64)):
                blocks = []
                for b in range(n):
                    i = 3 * (s * n + b)
                    blocks.append(Bottleneck(cin, planes, cfg[i:i + 3], 2 if s and not b else 1, b == 0))
                    cin = planes * 4
                setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
            self.bn = nn.BatchNorm2d(cin)
            self.select = ChannelSelection(cin)
            self.fc = nn.Linear(cfg[-1], classes)

        def forward(self, x):
            x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
            x = torch.relu(self.select(self.bn(x)))
            return self.fc(x.mean((2, 3)))

    class DenseLayer(nn.Module):  # network-slimming/models/densenet.py: BasicBlock and Transition
        def __init__(self, cin, width, out, kernel):
            super().__init__()
            self.bn1 = nn.BatchNorm2d(cin)
            self.select = ChannelSelection(cin)
            self.conv1 = nn.Conv2d(width, out, kernel, padding=kernel // 2, bias=False)

        def forward(self, x):
            return self.conv1(torch.relu(self.select(self.bn1(x))))

    class DenseNet(nn.Module):
        def __init__(self, depth, growth, cfg, classes):
            super().__init__()
            n = (depth - 4) // 3
            self.conv1 = nn.Conv2d(3, 2 * growth, 3, padding=1, bias=False)
            cin, k = 2 * growth, 0
            for d in range(3):
                layers = []
                for _ in range(n):
                    layers.append(DenseLayer(cin, cfg[k], growth, 3))
                    cin, k = cin + growth, k + 1
                setattr(self, f"dense{d + 1}", nn.Sequential(*layers))
                if d < 2:
                    setattr(self, f"trans{d + 1}", DenseLayer(cin, cfg[k], cin, 1))
                    k += 1
            self.bn = nn.BatchNorm2d(cin)
            self.select = ChannelSelection(cin)
            self.fc = nn.Linear(cfg[-1], classes)

        def forward(self, x):
            x = self.conv1(x)
            for d in range(3):
                for layer in getattr(self, f"dense{d + 1}"):
                    x = torch.cat([x, layer(x)], 1)
                if d < 2:
                    x = nn.functional.avg_pool2d(getattr(self, f"trans{d + 1}")(x), 2)
            x = torch.relu(self.select(self.bn(x)))
            return self.fc(x.mean((2, 3)))

    return dict(vgg=VGG, resnet=ResNet, preresnet=PreResNet, densenet=DenseNet)


def _randomise(net, seed, prune_selections=False):
    """Every parameter and BN statistic random; optionally a random subset kept by each selection."""
    torch = _torch()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in net.named_modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                fan_in = module.weight[0].numel()
                gain = 4.0 if isinstance(module, torch.nn.Linear) else 1.0  # logits of a few units
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * gain *
                                    math.sqrt(2.0 / fan_in))
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
            elif isinstance(module, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
                c = module.num_features
                module.weight.copy_(0.5 + 0.5 * torch.rand(c, generator=generator))
                module.bias.copy_(0.2 * torch.randn(c, generator=generator))
                module.running_mean.copy_(0.2 * torch.randn(c, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(c, generator=generator))
                module.num_batches_tracked.fill_(17)
    net.eval()
    return net


def _select_random(selections, seed):
    """Sets each selection's 0/1 ``indexes`` to keep ``count`` random channels (an official pruned net)."""
    rng = np.random.default_rng(seed)
    for module, count in selections:
        channels = module.indexes.numel()
        mask = np.zeros(channels, "float32")
        mask[rng.choice(channels, count, replace=False)] = 1
        module.indexes.data.copy_(_torch().from_numpy(mask))


def _images(size, seed=0, batch=2):
    return np.random.default_rng(seed).uniform(0, 255, (batch, size, size, 3)).astype("float32")


def _torch_logits(net, images):
    torch = _torch()
    mean, std = np.asarray(cifar.CIFAR_MEAN, "float32"), np.asarray(cifar.CIFAR_STD, "float32")
    x = torch.from_numpy(((images / 255.0 - mean) / std).transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        return net(x).numpy()


def _save(net, path, cfg=None):
    """``torch.save`` as the official prune / train scripts do: ``{"cfg", "state_dict"}``."""
    torch = _torch()
    torch.save({"cfg": cfg, "state_dict": net.state_dict()} if cfg is not None else
               {"epoch": 3, "state_dict": net.state_dict(), "best_prec1": 91.5}, str(path))
    return str(path)


def _max_abs(model, net, size):
    images = _images(size)
    ours = keras.ops.convert_to_numpy(model(images, training=False))
    theirs = _torch_logits(net, images)
    return float(np.abs(ours - theirs).max()), float(np.abs(theirs).max())


# ---- parity -------------------------------------------------------------------------------------

_VGG_TINY = (8, 8, "M", 16, "M", 16, 16, "M", 24)


def _pruned_preresnet_cfg(cfg):
    """Fewer stream channels selected per block (network slimming), narrower convs (3n + 1 entries)."""
    return [max(1, c * 5 // 8) if i % 3 == 0 or i == len(cfg) - 1 else max(1, c - 3) for i, c in enumerate(cfg)]


def _selections(net, layers):
    """``(channel_selection, channels kept)`` for each block of ``layers`` and the final selection."""
    return [(block.select, block.conv1.in_channels) for block in layers] + [(net.select, net.fc.in_features)]


def _case(case, modules):
    """``(official network, our builder given weights=, input side, cfg saved beside the weights)``."""
    if case.startswith("vgg"):
        head = case.split("_")[1]
        return modules["vgg"](list(_VGG_TINY), head, 10), lambda weights: cifar.VGGCIFAR(
            _VGG_TINY, head=head, input_shape=(16, 16, 3), weights=weights, classifier_activation=None,
            name="v"), 16, None
    if case.startswith("resnet"):
        shortcut = case[-1].upper()
        net = modules["resnet"](20, cifar.resnet_block_widths(20), shortcut, 10)
        return net, lambda weights: cifar.ResNetCIFAR(20, shortcut=shortcut, weights=weights,
                                                      classifier_activation=None), 32, None
    pruned = case.endswith("pruned")
    if case.startswith("preresnet"):
        cfg = cifar.preresnet_default_cfg(20)
        cfg = _pruned_preresnet_cfg(cfg) if pruned else cfg
        net = modules["preresnet"](20, cfg, 10)
        if pruned:
            _select_random(_selections(net, [b for stage in (net.layer1, net.layer2, net.layer3) for b in stage]),
                           seed=1)
        return net, lambda weights: cifar.PreResNetCIFAR(20, cfg, weights=weights,
                                                         classifier_activation=None), 32, cfg
    cfg = cifar.densenet_default_cfg(10, 4)
    cfg = [max(1, c - 3) for c in cfg] if pruned else cfg
    net = modules["densenet"](10, 4, cfg, 10)
    if pruned:
        layers = [layer for block in (net.dense1, net.dense2, net.dense3) for layer in block] + [net.trans1, net.trans2]
        _select_random(_selections(net, layers), seed=2)
    return net, lambda weights: cifar.DenseNetCIFAR(10, cfg, growth_rate=4, weights=weights,
                                                    classifier_activation=None), 32, cfg


@pytest.mark.torch
@pytest.mark.parametrize("case", ["vgg_l1", "vgg_slimming", "resnet20_a", "resnet20_b", "preresnet20",
                                  "densenet10", "preresnet20_pruned", "densenet10_pruned"])
def test_logits_equal_the_official_network(case, tmp_path):
    net, build, size, cfg = _case(case, _official_modules())
    _randomise(net, seed=0)
    model = build(_save(net, tmp_path / "official.pth", cfg))
    difference, scale = _max_abs(model, net, size)
    print(f"{case}: max |logit difference| {difference:.2e} at logit scale {scale:.2f}")
    assert scale > 1.0  # a real function, not a collapsed one
    assert difference <= TOLERANCE


@pytest.mark.torch
def test_headless_load_and_pooling(tmp_path):
    net = _randomise(_official_modules()["resnet"](20, cifar.resnet_block_widths(20), "A", 10), seed=3)
    path = _save(net, tmp_path / "r.pth")
    model = cifar.ResNetCIFAR(20, include_top=False, pooling="avg", weights=path)
    torch = _torch()
    images = _images(32)
    mean, std = np.asarray(cifar.CIFAR_MEAN, "float32"), np.asarray(cifar.CIFAR_STD, "float32")
    x = torch.from_numpy(((images / 255.0 - mean) / std).transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        features = net.layer3(net.layer2(net.layer1(torch.relu(net.bn1(net.conv1(x)))))).mean((2, 3)).numpy()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(images)), features, atol=TOLERANCE)


@pytest.mark.torch
def test_mismatching_checkpoints_fail_with_one_clear_error(tmp_path):
    modules = _official_modules()
    resnet = _save(_randomise(modules["resnet"](20, cifar.resnet_block_widths(20), "A", 100), seed=4),
                   tmp_path / "r100.pth")
    with pytest.raises(ValueError, match="100-class head.*classes=100"):
        cifar.ResNetCIFAR(20, weights=resnet)
    assert cifar.ResNetCIFAR(20, weights=resnet, classes=100).output_shape == (None, 100)
    with pytest.raises(ValueError, match="missing in checkpoint"):
        cifar.ResNetCIFAR(32, weights=resnet, classes=100)  # deeper than the file
    cfg = [c - 2 for c in cifar.resnet_block_widths(20)]
    pruned = _save(_randomise(modules["resnet"](20, cfg, "A", 10), seed=5), tmp_path / "pruned.pth", cfg)
    with pytest.raises(ValueError, match=r"(?s)shape mismatch.*the checkpoint's cfg: \[14, 14"):
        cifar.ResNetCIFAR(20, weights=pruned)
    vgg = _save(_randomise(modules["vgg"](list(_VGG_TINY), "slimming", 10), seed=6), tmp_path / "vgg.pth")
    with pytest.raises(ValueError, match="unexpected in checkpoint"):
        cifar.ResNetCIFAR(20, weights=vgg)
    with pytest.raises(ValueError, match="(?s)missing in checkpoint.*fc_1"):
        cifar.VGGCIFAR(_VGG_TINY, head="l1", input_shape=(16, 16, 3), weights=vgg, name="v")
    pre_cfg = cifar.preresnet_default_cfg(11)
    pre = _save(_randomise(modules["preresnet"](11, pre_cfg, 10), seed=7), tmp_path / "pre.pth")
    with pytest.raises(ValueError, match="checkpoint keeps 16 of 16 channels, the model's 'preresnet11_stage_0"):
        cifar.PreResNetCIFAR(11, [8] + pre_cfg[1:], weights=pre)


# ---- padding: every family that mirrors a PyTorch network pads as PyTorch does -----------------

def _strided_convs(model):
    """``(conv, layer feeding it)`` for every conv with stride > 1 (walking nested models)."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += _strided_convs(layer)
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)) and max(layer.strides) > 1:
            found.append((layer, _producer(layer)))
    return found


def _producer(layer):
    node = layer._inbound_nodes[0]
    return node.parent_nodes[0].operation if node.parent_nodes else None


def _assert_symmetric(model):
    """Strided convs never pad one-sidedly: overlapping windows (kernel > stride) sit behind a
    symmetric ``ZeroPadding2D(kernel // 2)``, patchify / 1×1 convs have no padding at all."""
    convs = _strided_convs(model)
    for conv, before in convs:
        assert conv.padding == "valid", f"{conv.name}: strided conv with padding={conv.padding!r}"
        kernel, stride = conv.kernel_size[0], conv.strides[0]
        if kernel > stride:
            assert isinstance(before, keras.layers.ZeroPadding2D), f"{conv.name} is fed by {before.name}"
            pad = kernel // 2
            assert tuple(map(tuple, before.padding)) == ((pad, pad), (pad, pad)), before.padding
        else:
            assert not isinstance(before, keras.layers.ZeroPadding2D), f"{conv.name} is padded"
    return len(convs)


def test_strided_convs_pad_every_side_as_pytorch_does():
    tiny_hrnet = dict(stem=8, layer1=(1, 8), stages=((1, (1, 1), (8, 16)), (1, (1, 1, 1), (8, 16, 32)),
                                                    (1, (1, 1, 1, 1), (8, 16, 32, 64))))
    from keras_visrec.convnext import ConvNeXt
    from keras_visrec.hrnet import HRNetV2

    models = [cifar.ResNetCIFAR(8), cifar.ResNetCIFAR(8, shortcut="B"), cifar.PreResNetCIFAR(11),
              cifar.DenseNetCIFAR(7, growth_rate=2), cifar.VGGCIFAR([4, "M", 4], input_shape=(8, 8, 3)),
              HRNetV2(tiny_hrnet, classes=3, input_shape=(64, 64, 3), name="h"),
              ConvNeXt((1, 1, 1, 1), (8, 16, 32, 64), input_shape=(32, 32, 3), classes=3)]
    counts = [_assert_symmetric(model) for model in models]
    assert counts[:3] == [2, 4, 4] and counts[5] >= 6 and counts[6] == 4  # the strided convs were found


def test_resnet_shortcut_pools_before_padding_channels():
    model = cifar.ResNetCIFAR(8, include_preprocessing=False, classifier_activation=None, name="r")
    names = {layer.name for layer in model.layers}
    assert {"r_stage_1_block_0_conv_1_pad", "r_stage_1_block_0_shortcut_pool", "r_stage_1_block_0_shortcut"} <= names
    probe = keras.Model(model.input, [model.get_layer("r_stage_0_block_0_relu_out").output,
                                      model.get_layer("r_stage_1_block_0_shortcut").output])
    x, shortcut = (keras.ops.convert_to_numpy(t) for t in probe(_images(32)))
    expected = x.reshape(2, 16, 2, 16, 2, 16).mean((2, 4))
    np.testing.assert_allclose(shortcut[..., :16], expected, rtol=1e-6, atol=1e-6)
    assert not shortcut[..., 16:].any()
