"""Official anytime key map: parity ≤ 1e-4 against a PyTorch reference of the official structure."""

import numpy as np
import pytest

from keras_visrec.adpc import AnytimeHRNet
from keras_visrec.converters.anytime import convert_anytime_state_dict


def _torch_reference(config, classes, width):
    """The official module tree (key names included), unmasked, written here in plain PyTorch."""
    torch = pytest.importorskip("torch")
    nn, F = torch.nn, torch.nn.functional

    def conv(i, o, k, s=1, bias=False):
        return nn.Conv2d(i, o, k, s, k // 2, bias=bias)

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
        def __init__(self, blocks, widths):
            super().__init__()
            n = len(widths)
            self.branches = nn.ModuleList([nn.Sequential(*[Basic(w) for _ in range(b)]) for b, w in zip(blocks, widths)])
            fuse = []
            for i in range(n):
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
                        y = y + F.interpolate(row[j](xs[j]), size=xs[i].shape[-2:], mode="bilinear")
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

    def rh(c, depth):
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
            self.exit1 = rh(4 * p, 3)
            for k, (modules, blocks, widths) in enumerate(config["stages"]):
                setattr(self, f"transition{k + 1}", transition(pre, widths))
                setattr(self, f"stage{k + 2}", nn.Sequential(*[Module(blocks, widths) for _ in range(modules)]))
                pre = list(widths)
                if k < 2:
                    setattr(self, f"exit{k + 2}", rh(sum(widths), 2 - k))
            c = sum(pre)
            self.last_layer = nn.Sequential(conv(c, c, 1, bias=True), nn.BatchNorm2d(c), nn.ReLU(), conv(c, classes, 1, bias=True))

        @staticmethod
        def _cat(xs):
            return torch.cat([xs[0]] + [F.interpolate(x, size=xs[0].shape[-2:], mode="bilinear") for x in xs[1:]], 1)

        def forward(self, x):
            x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
            xs = [self.layer1(x)]
            outs = [self.exit1(xs[0])]
            for k in range(3):
                trans = getattr(self, f"transition{k + 1}")
                xs = [t(xs[-1] if i >= len(xs) else xs[i]) if t is not None else xs[i] for i, t in enumerate(trans)]
                for module in getattr(self, f"stage{k + 2}"):
                    xs = module(xs)
                head = self.last_layer if k == 2 else getattr(self, f"exit{k + 2}")
                outs.append(head(self._cat(xs)))
            return outs

    torch.manual_seed(0)
    net = Net().eval()
    with torch.no_grad():  # non-trivial BN statistics
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return torch, net


@pytest.mark.torch
def test_parity_with_pytorch_reference(tiny_config):
    torch, net = _torch_reference(tiny_config, classes=5, width=8)
    state = {f"model.{k}": v.numpy() for k, v in net.state_dict().items()}
    model = AnytimeHRNet(tiny_config, classes=5, exit_width=8, name="tiny")
    report = convert_anytime_state_dict(state, model)
    assert not report["missing"] and not report["unused"]
    x = np.random.default_rng(0).normal(size=(1, 64, 64, 3)).astype("float32")
    with torch.no_grad():
        expected = [o.numpy().transpose(0, 2, 3, 1) for o in net(torch.from_numpy(x.transpose(0, 3, 1, 2)))]
    ours = model.anytime(x, mode="none")
    for e, o in zip(expected, ours):
        np.testing.assert_allclose(np.asarray(o), e, atol=1e-4, rtol=1e-4)


def test_class_count_mismatch_and_missing_keys(tiny_config):
    model = AnytimeHRNet(tiny_config, classes=5, exit_width=8, name="tiny")
    with pytest.raises(ValueError, match="num_classes"):
        convert_anytime_state_dict({"last_layer.3.weight": np.zeros((19, 120, 1, 1), "float32")}, model)
    with pytest.raises(ValueError, match="missing"):
        convert_anytime_state_dict({"conv1.weight": np.zeros((16, 3, 3, 3), "float32")}, model)
    report = convert_anytime_state_dict({"module.conv1.weight": np.ones((16, 3, 3, 3), "float32"),
                                         "conv1.square_dis": np.zeros((7, 7))}, model, strict=False)
    assert report["loaded"] == ["conv1.kernel"] and not report["unused"]
    np.testing.assert_array_equal(np.asarray(model.network.get_layer("tiny_conv1").kernel), 1.0)
