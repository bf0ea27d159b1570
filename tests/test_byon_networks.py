"""Networks written the way readers write them, for the "bring your own network" tests.

Each uses calls a CNN really makes (tensor methods, concatenation, channel shuffle, gating, drop
path, padding, adaptive pooling, upsampling, in-place activations, dropout, layers without a
rule) and none is registered with the memory engine. ``NETWORKS`` maps a name to a constructor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GlobalPoolNet(nn.Module):
    """conv -> ReLU -> x.mean((2, 3)) (a tensor method) -> Linear; a custom root module."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        return self.fc(x.mean((2, 3)))


class DenseLayer(nn.Module):
    def __init__(self, c, growth):
        super().__init__()
        self.norm, self.conv = nn.BatchNorm2d(c), nn.Conv2d(c, growth, 3, padding=1, bias=False)

    def forward(self, features):  # a list of tensors, as DenseNet passes them
        x = torch.cat(features, 1)
        return self.conv(F.relu(self.norm(x)))


class TinyDenseNet(nn.Module):
    """DenseNet-style: every layer reads the concatenation of all earlier feature maps."""

    def __init__(self, c=6, growth=4, layers=3):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, stride=2, padding=1)
        self.layers = nn.ModuleList(DenseLayer(c + i * growth, growth) for i in range(layers))
        self.head = nn.Linear(c + layers * growth, 4)

    def forward(self, x):
        features = [self.stem(x)]
        for layer in self.layers:
            features.append(layer(features))
        x = torch.cat(features, 1)
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def channel_shuffle(x, groups):
    b, c, h, w = x.size()
    x = x.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous()
    return x.view(b, -1, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2's stride-1 unit: chunk, a branch on one half, cat, channel shuffle."""

    def __init__(self, c):
        super().__init__()
        half = c // 2
        self.branch = nn.Sequential(nn.Conv2d(half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
                                    nn.Conv2d(half, half, 3, padding=1, groups=half, bias=False), nn.BatchNorm2d(half),
                                    nn.Conv2d(half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True))

    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat((a, self.branch(b)), dim=1), 2)


class TinyShuffleNet(nn.Sequential):
    """An nn.Sequential subclass (no rule): stem, two shuffle units, pooled head."""

    def __init__(self):
        super().__init__(nn.Conv2d(3, 8, 3, stride=2, padding=1), ShuffleUnit(8), ShuffleUnit(8),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))


class SEGate(nn.Module):
    """Squeeze-excitation written by hand: mean(keepdim), two 1x1 convs, sigmoid or hard-sigmoid."""

    def __init__(self, c, hard=False):
        super().__init__()
        self.reduce, self.expand, self.hard = nn.Conv2d(c, c // 2, 1), nn.Conv2d(c // 2, c, 1), hard

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        s = self.expand(F.silu(self.reduce(s)))
        return x * (F.hardsigmoid(s) if self.hard else torch.sigmoid(s))


class SENet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.se1 = nn.Conv2d(3, 8, 3, padding=1), SEGate(8)
        self.conv2, self.se2 = nn.Conv2d(8, 8, 3, stride=2, padding=1), SEGate(8, hard=True)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        x = self.se1(F.hardswish(self.conv1(x)))
        x = self.se2(F.relu6(self.conv2(x)))
        return self.fc(x.amax(dim=(2, 3)))


class DropPath(nn.Module):
    """Stochastic depth as timm writes it: ``x.new_empty(shape).bernoulli_(keep)``."""

    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        keep = 1 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)


class StochasticDepth(nn.Module):
    """Stochastic depth as torchvision writes it: ``torch.empty(size, device=x.device)``."""

    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training:
            return x
        noise = torch.empty([x.shape[0]] + [1] * (x.ndim - 1), dtype=x.dtype, device=x.device)
        return x * noise.bernoulli_(1 - self.p).div_(1 - self.p)


class ResidualDropNet(nn.Module):
    """Residual blocks with drop path and an in-place add (``out += x``)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.convs = nn.ModuleList(nn.Conv2d(6, 6, 3, padding=1) for _ in range(2))
        self.drops = nn.ModuleList([DropPath(0.2), StochasticDepth(0.3)])
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        x = self.stem(x)
        for conv, drop in zip(self.convs, self.drops):
            out = drop(F.gelu(conv(x)))
            out += x
            x = out
        return self.fc(x.sum(dim=(2, 3)))


class PadNet(nn.Module):
    """Padding four ways: reflect and replicate (keep their input), constant, a padding module."""

    def __init__(self):
        super().__init__()
        self.pad = nn.ReflectionPad2d(1)
        self.conv1 = nn.Conv2d(3, 4, 3)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, padding_mode="replicate")
        self.conv3 = nn.Conv2d(4, 4, 2)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = torch.tanh(self.conv1(self.pad(x)))
        x = self.conv2(x)
        x = self.conv3(F.pad(F.elu(x), (0, 1, 1, 0), value=0.5))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class AdaptivePoolNet(nn.Module):
    """Adaptive pooling of any size: (3, 5), (None, 1), a max pool to 2 x 2, and 1 x 1."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.pool_a, self.pool_b = nn.AdaptiveAvgPool2d((3, 5)), nn.AdaptiveAvgPool2d((None, 1))
        self.pool_c = nn.AdaptiveMaxPool2d(2)
        self.fc = nn.Linear(4 * (15 + 4), 3)

    def forward(self, x):
        x = F.leaky_relu(self.conv(x), 0.1)
        a = self.pool_a(x).flatten(1)
        b = self.pool_b(x).mean(2).squeeze(-1)  # (N, 4)
        c = self.pool_c(x).flatten(1)
        return self.fc(torch.cat([a, c], 1)) + b.sum(1, keepdim=True)


class TinyUNet(nn.Module):
    """Encoder-decoder: max pool down, nearest and bilinear upsampling, skip concatenation."""

    def __init__(self):
        super().__init__()
        self.enc1, self.enc2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 8, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.dec = nn.Conv2d(12, 4, 3, padding=1)
        self.out = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        e1 = F.relu(self.enc1(x))
        e2 = F.relu(self.enc2(F.max_pool2d(e1, 2)))
        up = F.interpolate(self.up(e2), size=e1.shape[-2:], mode="bilinear", align_corners=False)
        d = F.relu(self.dec(torch.cat([up, e1], 1)))
        return self.out(d)


class InPlaceNet(nn.Sequential):
    """In-place activations, modules and functions: ReLU6, Hardtanh, SiLU, Hardswish, relu_, sigmoid_."""

    def __init__(self):
        super().__init__(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU6(inplace=True),
                         nn.Conv2d(4, 4, 3), nn.Hardtanh(-2, 2, inplace=True),
                         nn.Conv2d(4, 4, 1), nn.SiLU(inplace=True),
                         nn.Conv2d(4, 4, 1), nn.Hardswish(inplace=True), InPlaceTail())


class InPlaceTail(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = F.relu_(self.conv(x))
        y = y * 2.0
        y.sigmoid_()
        return self.fc(y.mean((-1, -2)))


class MyReLU(nn.ReLU):
    """A subclass of nn.ReLU: no rule of its own (rules match exact types)."""


class DropoutNet(nn.Module):
    """Dropout after an activation (module and functional), Dropout2d, and a ReLU subclass."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)
        self.act = MyReLU()
        self.drop2d = nn.Dropout2d(0.3)
        self.fc1, self.drop = nn.Linear(6, 8), nn.Dropout(0.5)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        x = self.drop2d(self.act(self.conv(x)))
        x = self.drop(torch.relu(self.fc1(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))))
        return self.fc2(F.dropout(x, 0.2, self.training))


class ChannelsLastNorm(nn.Module):
    """ConvNeXt-style LayerNorm over channels: permute, layer_norm, permute back."""

    def __init__(self, c):
        super().__init__()
        self.norm = nn.LayerNorm(c)

    def forward(self, x):
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class TensorMethodNet(nn.Module):
    """Tensor methods: permute, layer norm, view / reshape, expand, unsqueeze, clone, stack, split."""

    def __init__(self):
        super().__init__()
        self.dw = nn.Conv2d(3, 6, 5, padding=2, groups=3)
        self.norm = ChannelsLastNorm(6)
        self.pw = nn.Conv2d(6, 6, 1)
        self.fc = nn.Linear(12, 2)

    def forward(self, x):
        x = self.pw(self.norm(self.dw(x)))
        a, b = x.split([2, 4], dim=1)
        g = a.mean(1, keepdim=True).expand(-1, 4, -1, -1)
        y = torch.stack([b * g, b.clone()], 0).sum(0)
        y = y.reshape(y.shape[0], 4, -1).transpose(1, 2)  # (N, HW, 4)
        pooled = torch.cat([y.amax(1), y.mean(1).unsqueeze(1).squeeze(1), a.flatten(2).mean(-1).repeat(1, 2)], 1)
        return self.fc(pooled)


class AttentionHead(nn.Module):
    """A CNN with a MultiheadAttention head over its pixels: a layer without a rule (measured)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = F.relu(self.conv(x))
        tokens = x.flatten(2).transpose(1, 2)  # (N, HW, C)
        out, _ = self.attn(tokens, tokens, tokens, need_weights=False)
        return self.fc(out.mean(1))


class LSTMHead(nn.Module):
    """A CNN whose columns feed an LSTM (CRNN-style): nn.LSTM has no rule (measured)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.rnn = nn.LSTM(4, 6, batch_first=True)
        self.fc = nn.Linear(6, 2)

    def forward(self, x):
        x = F.relu(self.conv(x)).mean(2)  # (N, C, W)
        out, (h, c) = self.rnn(x.permute(0, 2, 1))
        return self.fc(h[-1])


class ClampSquare(torch.autograd.Function):
    """A custom autograd function that keeps its input and a mask."""

    @staticmethod
    def forward(ctx, x):
        mask = x > 0
        ctx.save_for_backward(x, mask)
        return x.clamp(min=0) ** 2

    @staticmethod
    def backward(ctx, dy):
        x, mask = ctx.saved_tensors
        return dy * 2 * x * mask


class CustomFunctionNet(nn.Module):
    """A custom autograd function and a data-dependent branch: measured, no rule."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3)
        self.gate = DataDependent()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = ClampSquare.apply(self.conv1(x))
        x = self.gate(self.conv2(x))
        return self.fc(x.mean((2, 3)))


class DataDependent(nn.Module):
    def forward(self, x):
        if x.detach().abs().amax() > 0:  # reads a value: the shapes cannot follow it
            return torch.sigmoid(x) * x
        return x


NETWORKS = {
    "global pool (tensor method)": GlobalPoolNet,
    "DenseNet (cat of a list)": TinyDenseNet,
    "ShuffleNet (chunk, shuffle)": TinyShuffleNet,
    "squeeze-excite gating": SENet,
    "drop path, in-place add": ResidualDropNet,
    "padding": PadNet,
    "adaptive pooling": AdaptivePoolNet,
    "U-Net upsampling": TinyUNet,
    "in-place activations": InPlaceNet,
    "dropout, ReLU subclass": DropoutNet,
    "tensor methods": TensorMethodNet,
    "attention head (measured)": AttentionHead,
    "LSTM head (measured)": LSTMHead,
    "custom autograd, data-dependent (measured)": CustomFunctionNet,
}
