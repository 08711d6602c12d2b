"""Official HRNet-family checkpoints through ``weights=``: parity ≤ 1e-4 with an independent PyTorch
implementation of the official code (every parameter, BN statistic and RBF λ randomised), written to
real files in the official layouts (``final_state.pth`` with the loss wrapper's keys,
``checkpoint.pth.tar`` with its training state, a legacy-format ImageNet file, a pose file)."""

import numpy as np
import pytest

from keras_visrec.adpc import AnytimeHRNet, train_anytime
from keras_visrec.converters.anytime import convert_anytime_state_dict, infer_anytime_config, load_anytime_checkpoint
from keras_visrec.converters.pytorch_reader import load_pytorch_checkpoint
from keras_visrec.hrnet import HRNetV2

def _official(config, classes, width, exit_type="rh", task="segmentation", exits=True, masked=True):
    """The official module tree (key names included), written here in plain PyTorch after
    liuzhuang13/anytime ``model_anytime.py`` / ``conv_mask.py`` and, for ``task="pose"``,
    deep-high-resolution-net ``pose_hrnet.py`` (nearest fuse, last module fused into branch 0,
    ``final_layer``). ``masked``: every conv after exit 1 is the official masked conv (``Lambda``,
    ``square_dis``), its mask taken from the previous exit at the conv's output size."""
    torch = pytest.importorskip("torch")
    nn, F = torch.nn, torch.nn.functional
    state = {"out": None, "threshold": None}  # the previous exit's output that masks the convs

    class MaskConv(nn.Conv2d):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.Lambda = nn.Parameter(torch.tensor(3.0))
            d = torch.arange(7.0) - 3
            dis = d[None] ** 2 + d[:, None] ** 2
            dis[3, 3] = 100000.0
            self.square_dis = nn.Parameter(dis, requires_grad=False)

        def forward(self, x):
            y = super().forward(x)
            out = state["out"]
            if out is None:
                return y
            out = F.interpolate(out, size=y.shape[-2:])  # nearest
            if task == "pose":
                mask = (out.max(1, keepdim=True)[0] >= state["threshold"]).float()
            else:
                mask = (F.softmax(out, 1).max(1, keepdim=True)[0] <= state["threshold"]).float()
            kernel = (-(self.Lambda ** 2) * self.square_dis).exp()
            kernel = (kernel / (kernel.sum() + 1e-5)).expand(self.out_channels, 1, 7, 7)
            filled = F.conv2d(y * mask, kernel, padding=3, groups=self.out_channels)
            return y * mask + filled * (1 - mask)

    used = {"conv": nn.Conv2d}

    def conv(i, o, k, s=1, bias=False):
        return used["conv"](i, o, k, s, k // 2, bias=bias)

    class Bottleneck(nn.Module):
        def __init__(self, i, p, down):
            super().__init__()
            self.conv1, self.bn1 = conv(i, p, 1), nn.BatchNorm2d(p)
            self.conv2, self.bn2 = conv(p, p, 3), nn.BatchNorm2d(p)
            self.conv3, self.bn3 = conv(p, 4 * p, 1), nn.BatchNorm2d(4 * p)
            self.downsample = nn.Sequential(conv(i, 4 * p, 1), nn.BatchNorm2d(4 * p)) if down else None

        def forward(self, x):
            y = F.relu(self.bn1(self.conv1(x)))
            y = F.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
            return F.relu(y + (self.downsample(x) if self.downsample is not None else x))

    class Basic(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv1, self.bn1, self.conv2, self.bn2 = conv(c, c, 3), nn.BatchNorm2d(c), conv(c, c, 3), nn.BatchNorm2d(c)

        def forward(self, x):
            return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))) + x)

    class Module(nn.Module):
        def __init__(self, blocks, widths, rows):
            super().__init__()
            n = len(widths)
            self.branches = nn.ModuleList([nn.Sequential(*[Basic(w) for _ in range(b)]) for b, w in zip(blocks, widths)])
            fuse = []
            for i in range(rows):
                row = []
                for j in range(n):
                    if j > i:
                        row.append(nn.Sequential(conv(widths[j], widths[i], 1), nn.BatchNorm2d(widths[i])))
                    elif j == i:
                        row.append(None)
                    else:
                        steps = []
                        for k in range(i - j):
                            last = k == i - j - 1
                            out = widths[i] if last else widths[j]
                            parts = [conv(widths[j], out, 3, 2), nn.BatchNorm2d(out)] + ([] if last else [nn.ReLU()])
                            steps.append(nn.Sequential(*parts))
                        row.append(nn.Sequential(*steps))
                fuse.append(nn.ModuleList(row))
            self.fuse_layers = nn.ModuleList(fuse)

        def forward(self, xs):
            xs = [b(x) for b, x in zip(self.branches, xs)]
            out = []
            for i, row in enumerate(self.fuse_layers):
                y = xs[0] if i == 0 else row[0](xs[0])
                for j in range(1, len(xs)):
                    if i == j:
                        y = y + xs[j]
                    elif j > i:
                        z = row[j](xs[j])
                        if task == "pose":
                            y = y + F.interpolate(z, scale_factor=2 ** (j - i), mode="nearest")
                        else:
                            y = y + F.interpolate(z, size=xs[i].shape[-2:], mode="bilinear")
                    else:
                        y = y + row[j](xs[j])
                out.append(F.relu(y))
            return out

    def transition(pre, cur):
        layers = []
        for i, w in enumerate(cur):
            if i < len(pre):
                layers.append(None if pre[i] == w else nn.Sequential(conv(pre[i], w, 3), nn.BatchNorm2d(w), nn.ReLU()))
            else:
                steps = []
                for j in range(i + 1 - len(pre)):
                    out = w if j == i - len(pre) else pre[-1]
                    steps.append(nn.Sequential(conv(pre[-1], out, 3, 2), nn.BatchNorm2d(out), nn.ReLU()))
                layers.append(nn.Sequential(*steps))
        return nn.ModuleList(layers)

    def make_exit(c, depth):
        if exit_type == "ee":
            return nn.Sequential(conv(c, c, 1, bias=True), nn.BatchNorm2d(c), nn.ReLU(), conv(c, classes, 1, bias=True))
        parts = []
        for _ in range(depth):
            parts += [nn.AvgPool2d(2, 2), conv(c, width, 1, bias=True), nn.BatchNorm2d(width), nn.ReLU()]
            c = width
        for _ in range(depth - 1):
            parts += [nn.Upsample(scale_factor=2, mode="bilinear"), conv(width, width, 1, bias=True),
                      nn.BatchNorm2d(width), nn.ReLU()]
        return nn.Sequential(*parts, nn.Upsample(scale_factor=2, mode="bilinear"), conv(width, classes, 1, bias=True))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            s = config["stem"]
            self.conv1, self.bn1, self.conv2, self.bn2 = conv(3, s, 3, 2), nn.BatchNorm2d(s), conv(s, s, 3, 2), nn.BatchNorm2d(s)
            blocks, p = config["layer1"]
            self.layer1 = nn.Sequential(*[Bottleneck(s if i == 0 else 4 * p, p, i == 0 and s != 4 * p) for i in range(blocks)])
            pre = [4 * p]
            if exits:
                self.exit1 = make_exit(4 * p, 3)
            if masked:
                used["conv"] = MaskConv
            for k, (modules, blocks, widths) in enumerate(config["stages"]):
                setattr(self, f"transition{k + 1}", transition(pre, widths))
                rows = [len(widths)] * modules
                if task == "pose" and k == 2:
                    rows[-1] = 1  # multi_scale_output=False
                setattr(self, f"stage{k + 2}", nn.Sequential(*[Module(blocks, widths, r) for r in rows]))
                pre = list(widths)
                if k < 2 and exits:
                    setattr(self, f"exit{k + 2}", make_exit(sum(widths), 2 - k))
            if task == "pose":
                self.final_layer = conv(pre[0], classes, 1, bias=True)
            else:
                c = sum(pre)
                self.last_layer = nn.Sequential(conv(c, c, 1, bias=True), nn.BatchNorm2d(c), nn.ReLU(),
                                                conv(c, classes, 1, bias=True))

        @staticmethod
        def _cat(xs):
            return torch.cat([xs[0]] + [F.interpolate(x, size=xs[0].shape[-2:], mode="bilinear") for x in xs[1:]], 1)

        def backbone(self, x):
            x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
            xs = [self.layer1(x)]
            yield xs
            for k in range(3):
                trans = getattr(self, f"transition{k + 1}")
                xs = [t(xs[-1] if i >= len(xs) else xs[i]) if t is not None else xs[i] for i, t in enumerate(trans)]
                for module in getattr(self, f"stage{k + 2}"):
                    xs = module(xs)
                yield xs

        def forward(self, x, threshold=None):
            """The four exits; with ``threshold``, masked as the official ADP-C forward (copy aggregation)."""
            state["out"], state["threshold"], outs = None, threshold, []
            for k, xs in enumerate(self.backbone(x)):
                if k == 3:
                    out = self.final_layer(xs[0]) if task == "pose" else self.last_layer(self._cat(xs))
                elif exits:
                    out = getattr(self, f"exit{k + 1}")(self._cat(xs) if k else xs[0])
                else:  # a plain HRNet: the backbone only until the head
                    continue
                if outs and threshold is not None:
                    out = self._copy(outs[-1], out)
                outs.append(out)
                state["out"] = out if threshold is not None else None
            return outs

        def _copy(self, previous, out):
            kept = previous if task == "pose" else F.softmax(previous, 1)
            m = (kept.max(1, keepdim=True)[0] >= state["threshold"]) if task == "pose" else \
                (kept.max(1, keepdim=True)[0] <= state["threshold"])
            m = m.float()
            return previous * (1 - m) + out * m

    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        # BN statistics from the test image (a random net's activations otherwise fade to its
        # biases within a few layers and every pixel looks alike), then every statistic, affine
        # parameter and RBF sharpness perturbed at random
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = None  # cumulative average: one pass sets the statistics
        net.train()
        net(torch.from_numpy(_normalised(IMAGE).transpose(0, 3, 1, 2).copy()))
        net.eval()
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.add_(torch.empty_like(m.running_mean).uniform_(-0.1, 0.1))
                m.running_var.mul_(torch.empty_like(m.running_var).uniform_(0.7, 1.3))
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
            if isinstance(m, MaskConv):
                m.Lambda.uniform_(0.8, 3.5)
    return torch, net


def _nchw(torch, x):
    return torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


def _nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


def _official_state(net, wrapper="model."):
    """``FullEEModel(model, loss).state_dict()``: the model's keys behind ``model.`` plus the loss's."""
    import torch

    state = {f"{wrapper}{k}": v for k, v in net.state_dict().items()}
    state["loss.criterion.weight"] = torch.rand(19)
    return state


def _close(ours, theirs):
    """≤ 1e-4 relative to the logit scale."""
    scale = max(1.0, float(np.abs(theirs).max()))
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-4 * scale, rtol=0)


def _confidence(torch, out, task):
    return out.max(1)[0] if task == "pose" else torch.softmax(out, 1).max(1)[0]


def _share(torch, out, threshold, task):
    confidence = _confidence(torch, out, task)
    return float(((confidence >= threshold) if task == "pose" else (confidence <= threshold)).float().mean())


def _splitting_threshold(net, x, task):
    """A threshold that splits exit 1's pixels about in two (between distinct confidences at least
    1e-6 apart, so no pixel sits on it), after scaling exits 2 and 3's classifiers so that each
    later mask halves the computed share again (pixels copied once stay copied): every masked
    segment then computes some pixels and copies the others."""
    import torch

    first = net.exit1[-1]
    for _ in range(20):  # random exits are nearly flat: spread exit 1's confidences first
        confidence = _confidence(torch, net(x)[0], task).numpy().ravel()
        if confidence.max() - confidence.min() > 0.2:
            break
        first.weight.mul_(2.0)
    values = np.unique(confidence)
    cuts = [(a + b) / 2 for a, b in zip(values[:-1], values[1:]) if b - a > 1e-6]
    threshold = float(min(cuts, key=lambda t: abs((confidence >= t if task == "pose" else confidence <= t).mean() - 0.5)))
    target = _share(torch, net(x)[0], threshold, task)
    for k in (2, 3):
        target /= 2
        classifier = getattr(net, f"exit{k}")[-1]
        weight = classifier.weight.clone()
        low, high = -4.0, 4.0  # log2 of the scale
        for _ in range(14):
            scale = 2 ** ((low + high) / 2)
            classifier.weight.copy_(weight * scale)
            share = _share(torch, net(x, threshold=threshold)[k - 1], threshold, task)
            # larger outputs: more confident (segmentation) / more pixels over the threshold (pose)
            if (share > target) == (task == "segmentation"):
                low = (low + high) / 2
            else:
                high = (low + high) / 2
    return threshold


def _image():
    """A 64×64 RGB image with structure at every scale (waves, a disc, noise), so that exits, whose
    receptive fields pool up to 1/32, disagree from place to place."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:64, 0:64] / 64.0
    waves = [np.sin(2 * np.pi * (f * x + g * y)) for f, g in ((0.7, 0.2), (0.1, 1.3), (2.1, -1.7))]
    disc = ((x - 0.3) ** 2 + (y - 0.6) ** 2 < 0.04).astype("float32")
    image = 127.5 + 60 * np.stack(waves, -1) + 50 * disc[..., None] + rng.normal(0, 12, (64, 64, 3))
    return np.clip(image, 0, 255)[None].astype("float32")


IMAGE = _image()


def _normalised(x):
    from keras_visrec.layers.preprocessing import IMAGENET_MEAN, IMAGENET_STD

    return ((x / 255.0 - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD)).astype("float32")


@pytest.mark.torch
@pytest.mark.parametrize("exit_type, task", [("rh", "segmentation"), ("ee", "pose")])
def test_released_adpc_file_matches_official_masked_forward(tiny_config, tmp_path, exit_type, task):
    classes = 5
    torch, net = _official(tiny_config, classes, 8, exit_type=exit_type, task=task)
    x = _nchw(torch, _normalised(IMAGE))  # the official pipeline normalises before the network
    with torch.no_grad():
        threshold = _splitting_threshold(net, x, task)  # rescales exit classifiers: before the file is written
        plain = [_nhwc(o) for o in net(x)]
        masked = [_nhwc(o) for o in net(x, threshold=threshold)]
    path = tmp_path / "final_state.pth"
    torch.save(_official_state(net), path)
    model = AnytimeHRNet(tiny_config, classes=classes, exit_type=exit_type, exit_width=8, task=task, name="tiny",
                         threshold=threshold, weights=str(path))
    for ours, theirs in zip(model.anytime(IMAGE, mode="none"), plain):
        _close(ours, theirs)
    for ours, theirs in zip(model.anytime(IMAGE, mode="dense"), masked):
        _close(ours, theirs)
    shares = [np.mean(list(f.values())) for f in model.computed_fractions()]
    assert all(0.02 < s < 0.98 for s in shares), shares  # every segment computes some pixels and copies others
    assert not np.allclose(plain[-1], masked[-1])


@pytest.mark.torch
def test_training_checkpoint_tar_loads_and_reports_its_extras(tiny_config, tmp_path):
    torch, net = _official(tiny_config, 5, 8, exit_type="ee", masked=False)
    full = torch.nn.Module()
    full.model, full.loss = net, torch.nn.Module()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    net(torch.zeros(1, 3, 64, 64))[-1].sum().backward()
    optimizer.step()
    optimizer.zero_grad()
    path = tmp_path / "checkpoint.pth.tar"
    torch.save({"epoch": 484, "best_mIoU": 0.807, "state_dict": _official_state(net),
                "optimizer": optimizer.state_dict()}, path)
    config = infer_anytime_config(load_pytorch_checkpoint(str(path)))
    assert config == {"layout": "anytime", "task": "segmentation", "classes": 5, "exit_type": "ee", "exit_width": None,
                      "masked": False, "config": {**tiny_config, "stages": tuple(tiny_config["stages"])}}
    model = AnytimeHRNet(tiny_config, classes=5, exit_type="ee", name="tiny", mode="none", weights=str(path))
    with torch.no_grad():
        theirs = [_nhwc(o) for o in net(_nchw(torch, _normalised(IMAGE)))]
    for ours, expected in zip(model.anytime(IMAGE), theirs):
        _close(ours, expected)
    report = load_anytime_checkpoint(model, path)
    assert {"epoch", "best_mIoU", "optimizer", "loss.criterion.weight"} <= set(report["ignored"])
    assert not report["unused"] and not report["missing"] and report["layout"] == "anytime"


def _imagenet_file(tiny_config, tmp_path):
    """``(torch, net, state, path)``: an HRNet-Image-Classification file (backbone of ``net`` plus the
    classification head, official names and shapes) in the legacy format of the 2019 releases."""
    torch, net = _official(tiny_config, 5, 8, exits=False, masked=False)
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("last_layer")}
    rng = np.random.default_rng(1)
    widths = tiny_config["stages"][-1][2]
    for i, c in enumerate(widths):
        planes = (32, 64, 128, 256)[i]
        state[f"incre_modules.{i}.0.conv1.weight"] = torch.from_numpy(rng.normal(size=(planes, c, 1, 1)).astype("f"))
        state[f"incre_modules.{i}.0.downsample.0.weight"] = torch.from_numpy(
            rng.normal(size=(4 * planes, c, 1, 1)).astype("f"))
    state["downsamp_modules.0.0.weight"] = torch.zeros(256, 128, 3, 3)
    state["final_layer.0.weight"] = torch.zeros(2048, 1024, 1, 1)
    state["classifier.weight"], state["classifier.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    path = tmp_path / "hrnetv2_tiny_imagenet_pretrained.pth"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    return torch, net, state, path


@pytest.mark.torch
def test_imagenet_classifier_initialises_the_backbone_only(tiny_config, tmp_path):
    torch, net, state, path = _imagenet_file(tiny_config, tmp_path)
    features = HRNetV2(tiny_config, include_top=False, weights=str(path), name="tiny")
    with torch.no_grad():
        *_, expected = net.backbone(_nchw(torch, _normalised(IMAGE)))
    for ours, theirs in zip(features(IMAGE), expected):
        _close(ours, _nhwc(theirs))
    assert list(features.pyramid_outputs) == ["P2", "P3", "P4", "P5"]

    anytime = AnytimeHRNet(tiny_config, classes=19, exit_width=8, name="tiny", weights=str(path))
    report = load_anytime_checkpoint(anytime, path)
    assert report["layout"] == "hrnet_imagenet" and not report["unused"] and not report["missing"]
    assert {k.split(".")[0] for k in report["skipped"]} == {"incre_modules", "downsamp_modules", "final_layer",
                                                            "classifier"}
    assert any("exit1" in p for p in report["not_in_checkpoint"]) and any("last_layer" in p for p in
                                                                          report["not_in_checkpoint"])
    np.testing.assert_array_equal(np.asarray(anytime.network.get_layer("tiny_conv1").kernel),
                                  state["conv1.weight"].numpy().transpose(2, 3, 1, 0))


@pytest.mark.torch
@pytest.mark.slow
def test_train_anytime_starts_from_the_imagenet_backbone(tiny_config, tmp_path):
    import tensorflow as tf

    _, _, state, path = _imagenet_file(tiny_config, tmp_path)
    labels = np.zeros((2, 64, 64), "int32")
    data = tf.data.Dataset.from_tensor_slices((np.repeat(IMAGE, 2, 0), labels)).batch(2)
    # lr ~0: after one step the backbone is still the file's
    trained, history = train_anytime(lambda: AnytimeHRNet(tiny_config, classes=19, exit_width=8, name="tiny",
                                                          mode="none"),
                                     data, weights=str(path), base_lr=1e-12, momentum=0.0, weight_decay=0.0, verbose=0)
    np.testing.assert_allclose(np.asarray(trained.network.get_layer("tiny_conv1").kernel),
                               state["conv1.weight"].numpy().transpose(2, 3, 1, 0), atol=1e-6)
    assert np.isfinite(history.history["loss"][-1])


@pytest.mark.torch
def test_official_pose_and_segmentation_hrnets_load(tiny_config, tmp_path):
    torch, pose = _official(tiny_config, 16, 8, task="pose", exits=False, masked=False)
    path = tmp_path / "pose_hrnet_tiny_256x256.pth"
    torch.save(pose.state_dict(), path)
    model = AnytimeHRNet(tiny_config, exit_width=8, task="pose", name="tiny", mode="none", weights=str(path))
    x = _nchw(torch, _normalised(IMAGE))
    with torch.no_grad():
        *_, xs = pose.backbone(x)
        expected = _nhwc(pose.final_layer(xs[0]))
    _close(model.anytime(IMAGE)[-1], expected)

    torch, seg = _official(tiny_config, 7, 8, exits=False, masked=False)
    path = tmp_path / "hrnet_tiny_cityscapes.pth"
    torch.save(_official_state(seg), path)
    plain = HRNetV2(tiny_config, classes=7, weights=str(path), name="tiny")
    with torch.no_grad():
        *_, xs = seg.backbone(_nchw(torch, _normalised(IMAGE)))
        expected = _nhwc(seg.last_layer(seg._cat(xs)))
    _close(plain(IMAGE), expected)
    headless = HRNetV2(tiny_config, include_top=False, weights=str(path), name="tiny")
    _close(headless(IMAGE)[0], _nhwc(xs[0]))


# --- bad input: one clear error naming what disagrees (no torch needed) ---------------------------

def _zeros(*shape):
    return np.zeros(shape, "float32")


def test_task_exit_width_and_class_mismatches_are_named(tiny_config):
    seg = AnytimeHRNet(tiny_config, classes=5, exit_width=8, name="tiny")
    with pytest.raises(ValueError, match=r"pose checkpoint \(final_layer.weight of shape \(16, 8, 1, 1\)\).*task='pose'"):
        convert_anytime_state_dict({"final_layer.weight": _zeros(16, 8, 1, 1), "conv1.weight": _zeros(16, 3, 3, 3)},
                                   seg, source="pose.pth")
    with pytest.raises(ValueError, match=r"EE exits.*exit_type='ee'"):
        convert_anytime_state_dict({"exit1.0.weight": _zeros(32, 32, 1, 1), "exit1.3.weight": _zeros(5, 32, 1, 1)},
                                   seg)
    with pytest.raises(ValueError, match=r"16 wide.*exit_width=16"):
        convert_anytime_state_dict({"exit1.1.weight": _zeros(16, 32, 1, 1), "exit1.21.weight": _zeros(5, 16, 1, 1)},
                                   seg)
    with pytest.raises(ValueError, match=r"19 classes.*classes=19"):
        convert_anytime_state_dict({"model.last_layer.3.weight": _zeros(19, 120, 1, 1)}, seg)
    with pytest.raises(ValueError, match=r"transition1.0.0.weight: checkpoint \(48, 32, 3, 3\), model \(8, 32, 3, 3\)"):
        convert_anytime_state_dict({"transition1.0.0.weight": _zeros(48, 32, 3, 3),
                                    "transition1.1.0.0.weight": _zeros(96, 32, 3, 3)}, seg, source="w48.pth")
    pose = AnytimeHRNet(tiny_config, exit_width=8, task="pose", name="tiny")
    with pytest.raises(ValueError, match=r"segmentation checkpoint.*task='segmentation'"):
        convert_anytime_state_dict({"last_layer.3.weight": _zeros(19, 120, 1, 1)}, pose)


def test_strict_mode_names_unused_and_missing_keys_but_not_the_loss(tiny_config):
    model = AnytimeHRNet(tiny_config, classes=5, exit_width=8, name="tiny")
    state = {"model.conv1.weight": np.ones((16, 3, 3, 3), "float32"), "loss.criterion.weight": _zeros(19),
             "model.conv1.square_dis": _zeros(7, 7), "model.surplus.weight": _zeros(3)}
    with pytest.raises(ValueError, match=r"missing \['tiny_bn1/gamma'.*\(272 in all\), unused \['surplus.weight'\]"):
        convert_anytime_state_dict(state, model)
    report = convert_anytime_state_dict(state, model, strict=False)
    assert report["loaded"] == ["conv1.kernel"] and report["unused"] == ["surplus.weight"]
    assert report["ignored"] == ["loss.criterion.weight"]
    np.testing.assert_array_equal(np.asarray(model.network.get_layer("tiny_conv1").kernel), 1.0)
