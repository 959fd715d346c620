"""Image models for the real-data tasks: a small CNN family and a ResNet-18 for 32x32 inputs.

Both list their layers in forward order as TransferLayers, so that `partial-layers[layers=k]`
copies the first k of them (Yosinski et al.'s AnB counts layers the same way) and
`partial-filters` chooses output channels ("filters") inside each of them.

What a filter is, and the next layer's weights on its channel
-------------------------------------------------------------
A filter is one output channel of a layer: its weights over *all* input channels, its bias,
and (ResNet) its BatchNorm scale and shift. Every weight of the network thus belongs to
exactly one filter, the one whose output it produces, and the next layer's weights that read
channel i (`next.weight[:, i]`) belong to the next layer's filters: they are inherited when,
and only when, those filters are. So no layer declares a `follow`, and:

* `partial-filters[fraction=a]` inherits exactly a share a of every layer's weights (the
  paper's alpha-proportion), and an inherited filter of layer l+1 keeps all of its source
  weights, including those on channels of layer l that are fresh in the target;
* `partial-layers[layers=k]` is partial-filters at fraction 1 on the first k layers and
  nothing else: layer k+1 is wholly fresh, as in Yosinski et al.'s AnB. (Had copying filter
  i also copied the next layer's input slice, copying *every* filter of layer k would copy
  every weight of layer k+1 but its bias, and layers=k would be layers=k+1 in all but name:
  an early version did that, and k=3 and k=4 gave identical accuracies.)

Normalisation
-------------
The small CNN has no normalisation layer on purpose: then a plan's parameter masks describe
the model's whole state, with no buffers that a plan cannot copy. The ResNet uses BatchNorm
(what ResNet-18 is); its scale and shift belong to the filters they normalise and travel with
them, while the running statistics are buffers, which plans do not copy. They start fresh in
the target model and are re-estimated from target batches while it trains (running averages
with momentum 0.1 forget their start within a few dozen steps), even in frozen layers: a
frozen BatchNorm layer keeps its learned scale and shift, and normalises with target
statistics.

Both models draw every initial value from the generator they are given (pairing: equal
seeds give equal fresh parameters).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ptbench.api import TransferLayer, TransferModel


def _kaiming(weight: torch.Tensor, generator: torch.Generator, mode: str = "fan_in") -> None:
    nn.init.kaiming_normal_(weight, mode=mode, nonlinearity="relu", generator=generator)


def _uniform_fan_in(param: torch.Tensor, fan_in: int, generator: torch.Generator) -> None:
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        param.uniform_(-bound, bound, generator=generator)


def pool_after(depth: int, image_size: int, pool_every: int = 2) -> list[bool]:
    """After which conv layers the small CNN halves the resolution: every `pool_every`
    layers, while the maps are at least 4 pixels wide (they never shrink below 2)."""
    out, size = [], image_size
    for i in range(depth):
        pool = (i + 1) % pool_every == 0 and size >= 4
        out.append(pool)
        size = size // 2 if pool else size
    return out


class SmallCNN(TransferModel):
    """`depth` 3x3 conv + ReLU layers, 2x2 max-pooling every two layers, and a head.

    The width starts at `width` and doubles at every pooling. The head is a convolution whose
    kernel covers the final map (a linear layer on the flattened map, whose weight keeps the
    channel as its dim 1). Trains in seconds on a CPU for
    8x8 digits.
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        generator: torch.Generator,
        width: int = 16,
        depth: int = 4,
    ):
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError("the small CNN needs depth >= 1 and width >= 1")
        self.pools = pool_after(depth, image_size)
        convs, channels, size = [], in_channels, image_size
        out = width
        for pool in self.pools:
            convs.append(nn.Conv2d(channels, out, 3, padding=1))
            channels = out
            if pool:
                size //= 2
                out *= 2
        self.convs = nn.ModuleList(convs)
        self.head = nn.Conv2d(channels, num_classes, size)
        self.num_classes = num_classes
        with torch.no_grad():
            for conv in self.convs:
                _kaiming(conv.weight, generator)
                conv.bias.zero_()
            _uniform_fan_in(self.head.weight, channels * size * size, generator)
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]

    def feature_layers(self) -> list[str]:
        return [f"conv{i + 1}" for i in range(len(self.convs))]

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The logits, and per conv layer ("conv1", ...) its output as the next layer reads
        it: after the ReLU, and after the pooling where the model pools.

        Where a layer pools, it pools before its ReLU: max-pooling and ReLU commute (ReLU is
        monotone), in values and in gradients (both send a window's gradient to its first
        maximal entry, and nowhere when that maximum is not positive), so this is ReLU then
        pooling, bit for bit, with the ReLU on a quarter of the entries."""
        features = {}
        for i, (conv, pool) in enumerate(zip(self.convs, self.pools)):
            x = conv(x)
            if pool:
                x = F.max_pool2d(x, 2)
            x = F.relu(x)
            features[f"conv{i + 1}"] = x
        return self.head(x).flatten(1), features

    def stacked_forward_features(
        self, params: dict[str, torch.Tensor], x: torch.Tensor, start: int = 0
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """`forward_features` of J models at once, the vmapped engine's fast path
        (`ptbench.run.vmapped`): `params` maps each parameter name to the J models' values
        stacked along a leading dim, `x` is [J, N, C, H, W] (model j reads x[j]); returns the
        logits [J, N, classes] and each feature as [J, N, C, H, W] (a view).

        With `start` = k > 0, `x` is instead what conv layer k outputs (`stacked_layers(params,
        images, k)`, i.e. the feature "conv{k}"), and only the layers after it run (their
        features alone are returned): the engine computes the layers that every job of a
        program holds constant once, over the training set, instead of at every step.

        The J models run as grouped convolutions (group j: model j) on one [N, J*C, H, W]
        map, as vmap runs `forward_features` too, but on a CPU channels-last throughout: on
        small maps (8x8 digits) oneDNN's grouped NCHW kernels and the NCHW max-pooling, which
        loops over tiny planes, ran several times slower (the 2-core machine, J = 2 to 46,
        width 8 and 16: one step 15-35% faster than the same program in NCHW with channels-
        last pooling, and 30-40% faster than vmap). Elsewhere (CUDA, not measured) the maps
        stay NCHW, as under vmap. Values are `forward_features`' up to float rounding (other
        kernels sum in another order; in float64 they agree to about 1e-15)."""
        J, N = x.shape[0], x.shape[1]
        h = self._stack(x)
        features = {}
        for i in range(start, len(self.convs)):
            h = self._stacked_layer(params, i, h, J)
            features[f"conv{i + 1}"] = self._unstack(h, J)
        weight, bias = params["head.weight"], params["head.bias"]
        out = F.conv2d(h, weight.reshape(-1, *weight.shape[2:]), bias.reshape(-1), groups=J)
        return out.reshape(N, J, -1).transpose(0, 1), features

    def stacked_layers(self, params: dict[str, torch.Tensor], x: torch.Tensor, stop: int) -> torch.Tensor:
        """What conv layer `stop` (counted as `transfer_layers` counts, from 1) of the J models
        outputs for images x [J, N, C, H, W]: the feature "conv{stop}" of
        `stacked_forward_features(params, x)`, bit for bit (the kernels compute each example
        alone, whatever N is), as [J, N, C, H, W], without running the layers after it."""
        J = x.shape[0]
        h = self._stack(x)
        for i in range(stop):
            h = self._stacked_layer(params, i, h, J)
        return self._unstack(h, J)

    @staticmethod
    def _stack(x: torch.Tensor) -> torch.Tensor:
        """[J, N, C, H, W] as the one [N, J*C, H, W] map the grouped convolutions read."""
        layout = torch.channels_last if x.device.type == "cpu" else torch.contiguous_format
        return x.transpose(0, 1).reshape(x.shape[1], x.shape[0] * x.shape[2], *x.shape[3:]).contiguous(memory_format=layout)

    @staticmethod
    def _unstack(h: torch.Tensor, J: int) -> torch.Tensor:
        """The [N, J*C, H, W] map back as [J, N, C, H, W] (a view)."""
        return h.reshape(h.shape[0], J, -1, *h.shape[2:]).transpose(0, 1)

    def _stacked_layer(self, params: dict[str, torch.Tensor], i: int, h: torch.Tensor, J: int) -> torch.Tensor:
        conv = self.convs[i]
        weight, bias = params[f"convs.{i}.weight"], params[f"convs.{i}.bias"]
        h = F.conv2d(h, weight.reshape(-1, *weight.shape[2:]), bias.reshape(-1), conv.stride, conv.padding, conv.dilation, J * conv.groups)
        if self.pools[i]:
            h = F.max_pool2d(h, 2)
        return F.relu(h)

    def transfer_layers(self) -> list[TransferLayer]:
        layers = []
        for i, conv in enumerate(self.convs):
            layers.append(TransferLayer(f"conv{i + 1}", (f"convs.{i}.weight", f"convs.{i}.bias"), (conv.out_channels,)))
        layers.append(TransferLayer("head", ("head.weight", "head.bias"), (self.num_classes,), head=True))
        return layers


class BasicBlock(nn.Module):
    """Two 3x3 convs with BatchNorm and a residual connection (a 1x1 conv when shapes change)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Sequential | None = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class ResNet18(TransferModel):
    """ResNet-18 for small inputs (the CIFAR variant: a 3x3 stem, no max-pooling), four stages
    of two BasicBlocks with widths w, 2w, 4w, 8w (w = 64 is the usual one), global average
    pooling and a linear head. Meant for a GPU; works on any input of 8 pixels and up.

    Transfer layers, in forward order (18 with the head, hence the name): the stem, then each
    block's conv1 and conv2. A block's conv2 layer also owns the block's shortcut conv, whose
    output channels are added to the same channels (the residual stream): filter i of a
    block's conv2 layer is channel i of that stream, conv2's and the shortcut's parts of it.
    """

    def __init__(self, in_channels: int, num_classes: int, generator: torch.Generator, width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        blocks, cin = [], width
        for stage, mult in enumerate((1, 2, 4, 8)):
            cout = width * mult
            for b in range(2):
                blocks.append(BasicBlock(cin, cout, 2 if (stage > 0 and b == 0) else 1))
                cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(cin, num_classes)
        self.num_classes = num_classes
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    _kaiming(module.weight, generator, mode="fan_out")
                elif isinstance(module, nn.BatchNorm2d):
                    module.weight.fill_(1.0)
                    module.bias.zero_()
            _uniform_fan_in(self.fc.weight, cin, generator)
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]

    def feature_layers(self) -> list[str]:
        return ["stem"] + [f"block{i + 1}.conv{j}" for i in range(len(self.blocks)) for j in (1, 2)]

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The logits, and per transfer layer but the head its output as the next layer reads
        it (named like the transfer layers): "stem", each block's "blockK.conv1" (after its
        BatchNorm and ReLU) and "blockK.conv2" (the block's output, after the residual sum)."""
        x = F.relu(self.bn1(self.conv1(x)))
        features = {"stem": x}
        for i, block in enumerate(self.blocks):
            inner = F.relu(block.bn1(block.conv1(x)))
            out = block.bn2(block.conv2(inner))
            x = F.relu(out + (x if block.shortcut is None else block.shortcut(x)))
            features[f"block{i + 1}.conv1"] = inner
            features[f"block{i + 1}.conv2"] = x
        return self.fc(x.mean(dim=(2, 3))), features

    def transfer_layers(self) -> list[TransferLayer]:
        layers = [TransferLayer("stem", ("conv1.weight", "bn1.weight", "bn1.bias"), (self.conv1.out_channels,))]
        for i, block in enumerate(self.blocks):
            p = f"blocks.{i}"
            width = block.conv1.out_channels
            layers.append(
                TransferLayer(
                    f"block{i + 1}.conv1",
                    (f"{p}.conv1.weight", f"{p}.bn1.weight", f"{p}.bn1.bias"),
                    (width,),
                )
            )
            own = [f"{p}.conv2.weight", f"{p}.bn2.weight", f"{p}.bn2.bias"]
            if block.shortcut is not None:
                own += [f"{p}.shortcut.0.weight", f"{p}.shortcut.1.weight", f"{p}.shortcut.1.bias"]
            layers.append(TransferLayer(f"block{i + 1}.conv2", tuple(own), (width,)))
        layers.append(TransferLayer("head", ("fc.weight", "fc.bias"), (self.num_classes,), head=True))
        return layers


MODELS = ("cnn", "resnet18")


def build_image_model(
    kind: str,
    in_channels: int,
    image_size: int,
    num_classes: int,
    generator: torch.Generator,
    width: int,
    depth: int,
    inherit_head: bool,
) -> TransferModel:
    """The model a task names; `inherit_head` is True only when both sides share their classes."""
    if kind == "cnn":
        model: TransferModel = SmallCNN(in_channels, image_size, num_classes, generator, width=width, depth=depth)
    elif kind == "resnet18":
        model = ResNet18(in_channels, num_classes, generator, width=width)
    else:
        raise ValueError(f"unknown model {kind!r}; valid: {', '.join(MODELS)}")
    model.inherit_head = inherit_head
    return model
