"""CNNs for the Warcraft task: tile costs from a map image, or the path mask directly.

* :class:`ResNetStemCNN` is the papers' cost network: ResNet18's first convolution,
  batch norm, ReLU, max-pool and first residual stage, an adaptive max-pool to the
  ``k x k`` tile grid and a mean over channels, which is non-negative because the
  residual stage ends in a ReLU.
* :class:`SmallCNN` is a cheaper cost network for CPU runs (about a tenth of the
  stem's multiply-adds), with the same input, output and non-negativity.
* :class:`DirectCNN` is the papers' baseline without a solver: it predicts the
  logits of the path mask, to be trained with a per-cell binary cross-entropy.

All take ``[B, 3, 8k, 8k]`` float images (standardised per channel; see
:func:`standardise`) and return ``[B, k, k]``.

References:
    K. He, X. Zhang, S. Ren, J. Sun. Deep Residual Learning for Image Recognition.
    CVPR 2016.

    M. Vlastelica, A. Paulus, V. Musil, G. Martius, M. Rolinek. Differentiation of
    Blackbox Combinatorial Solvers. ICLR 2020.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..._checks import check_choice, check_positive_int


class BasicBlock(nn.Module):
    """ResNet's basic residual block: two 3x3 convolutions with batch norm and a skip.

    Args:
        channels: Input and output channels (the block keeps the resolution).

    Example:
        >>> BasicBlock(8)(torch.randn(2, 8, 6, 6)).shape
        torch.Size([2, 8, 6, 6])
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [B, C, H, W]``, non-negative (ends in a ReLU)."""
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(out)))


def _check_size(owner: str, size: int) -> int:
    return check_positive_int(owner, "size", size, minimum=2)


class ResNetStemCNN(nn.Module):
    """The papers' cost network: ResNet18's stem and first stage, pooled to the tile grid.

    ``conv 7x7/2 (64) -> BN -> ReLU -> max-pool 3x3/2 -> 2 basic blocks (64)
    -> adaptive max-pool to k x k -> mean over channels``. The output is
    non-negative, as a shortest-path solver's vertex costs must be.

    Args:
        size: Tiles per side ``k`` of the output grid.
        channels: Width of the stem and stage (64 in ResNet18).

    Example:
        >>> model = ResNetStemCNN(12)
        >>> costs = model(torch.randn(2, 3, 96, 96))
        >>> costs.shape, bool((costs >= 0).all())
        (torch.Size([2, 12, 12]), True)
    """

    def __init__(self, size: int, *, channels: int = 64) -> None:
        super().__init__()
        self.size = _check_size("ResNetStemCNN", size)
        channels = check_positive_int("ResNetStemCNN", "channels", channels)
        self.conv1 = nn.Conv2d(3, channels, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = nn.Sequential(BasicBlock(channels), BasicBlock(channels))
        self.pool = nn.AdaptiveMaxPool2d((self.size, self.size))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Tile features ``[B, C, k, k]`` (non-negative) of ``images [B, 3, 8k, 8k]``."""
        x = self.maxpool(F.relu(self.bn1(self.conv1(images))))
        return self.pool(self.layer1(x))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Tile costs ``[B, k, k]`` >= 0 of ``images [B, 3, 8k, 8k]``."""
        return self.features(images).mean(dim=1)


class SmallCNN(nn.Module):
    """A cheap cost network for CPU runs, with the stem's input, output and grid pooling.

    ``conv 4x4/4 -> BN -> ReLU -> conv 2x2/2 -> BN -> ReLU -> adaptive max-pool to
    k x k -> (1x1 conv -> ReLU) x 2 -> 1x1 conv -> softplus``. The first convolution
    cuts each 8 x 8 tile into four 4 x 4 patches, the second joins a tile's four
    patches, so each cost is read from its own tile only (the tiles of the Warcraft
    maps are 8 x 8 pixels on an 8-pixel grid). The two hidden 1x1 layers let the
    cost snap to a few levels, which a path loss needs: costs must be precise for a
    solver to pick the optimal path. At 96 x 96 pixels the network needs about
    5 M multiply-adds per map, against about 107 M for :class:`ResNetStemCNN`.
    Softplus keeps the costs positive without the dead units that a final ReLU
    can leave.

    Args:
        size: Tiles per side ``k``.
        channels: Width of the network.

    Example:
        >>> costs = SmallCNN(12)(torch.randn(2, 3, 96, 96))
        >>> costs.shape, bool((costs > 0).all())
        (torch.Size([2, 12, 12]), True)
    """

    def __init__(self, size: int, *, channels: int = 64) -> None:
        super().__init__()
        self.size = _check_size("SmallCNN", size)
        channels = check_positive_int("SmallCNN", "channels", channels)
        self.stem = nn.Sequential(
            nn.Conv2d(3, channels, 4, stride=4, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 2, stride=2, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveMaxPool2d((self.size, self.size))
        self.head = nn.Sequential(
            nn.Conv2d(channels, channels, 1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1),
            nn.ReLU(),
            nn.Conv2d(channels, 1, 1),
        )

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Tile features ``[B, C, k, k]`` (non-negative) of ``images [B, 3, 8k, 8k]``."""
        return self.pool(self.stem(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Tile costs ``[B, k, k]`` > 0 of ``images [B, 3, 8k, 8k]``."""
        return F.softplus(self.head(self.features(images))).squeeze(1)


class DirectCNN(nn.Module):
    """The baseline without a solver: path-mask logits from a map image.

    A cost network's tile features ``[B, C, k, k]`` go through four 3x3 convolutions
    on the tile grid, dilated 1, 2, 4 and 8 so that every tile sees the whole map
    (the path through a tile depends on tiles far away), then a 1x1 convolution to
    one logit per tile. Train it with a per-cell binary cross-entropy against the
    true path mask; a path is read off by thresholding the sigmoid at 0.5.

    Args:
        size: Tiles per side ``k``.
        backbone: ``"small"`` (:class:`SmallCNN`'s features) or ``"resnet"``
            (:class:`ResNetStemCNN`'s).
        channels: Width of the backbone and of the grid convolutions (default 64).

    Example:
        >>> logits = DirectCNN(12)(torch.randn(2, 3, 96, 96))
        >>> logits.shape
        torch.Size([2, 12, 12])
    """

    def __init__(self, size: int, *, backbone: str = "small", channels: int | None = None) -> None:
        super().__init__()
        self.size = _check_size("DirectCNN", size)
        check_choice("DirectCNN", "backbone", backbone, ("small", "resnet"))
        width = 64 if channels is None else channels
        width = check_positive_int("DirectCNN", "channels", width)
        self.backbone = (SmallCNN if backbone == "small" else ResNetStemCNN)(size, channels=width)
        if isinstance(self.backbone, SmallCNN):
            self.backbone.head = nn.Sequential()  # only its features are used: no unused parameters
        layers: list[nn.Module] = []
        for dilation in (1, 2, 4, 8):
            layers += [
                nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
            ]
        self.grid = nn.Sequential(*layers)
        self.head = nn.Conv2d(width, 1, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Path logits ``[B, k, k]`` of ``images [B, 3, 8k, 8k]``."""
        return self.head(self.grid(self.backbone.features(images))).squeeze(1)


MODELS = ("small", "resnet")


def build_model(kind: str, size: int, *, direct: bool = False, channels: int | None = None) -> nn.Module:
    """The cost network ``kind`` (``"small"`` or ``"resnet"``), or the direct baseline on it.

    Args:
        kind: ``"small"`` (:class:`SmallCNN`) or ``"resnet"`` (:class:`ResNetStemCNN`).
        size: Tiles per side ``k``.
        direct: Build :class:`DirectCNN` with this backbone instead.
        channels: Network width (default 64).

    Example:
        >>> type(build_model("resnet", 12)).__name__, type(build_model("small", 12, direct=True)).__name__
        ('ResNetStemCNN', 'DirectCNN')
    """
    check_choice("warcraft", "model", kind, MODELS)
    if direct:
        return DirectCNN(size, backbone=kind, channels=channels)
    width = 64 if channels is None else channels
    return (SmallCNN if kind == "small" else ResNetStemCNN)(size, channels=width)


def standardise(maps: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``[B, H, W, 3]`` uint8 maps to ``[B, 3, H, W]`` float images, standardised per channel.

    Each channel has the training maps' mean subtracted and is divided by their
    standard deviation. (The task's other rescaling, of the predicted costs, is
    :func:`~.evaluation.normalise_costs`.)

    Args:
        maps: ``[B, H, W, 3]`` uint8 (or float) RGB maps.
        mean: ``[3]`` channel means of the training maps (0-255 scale).
        std: ``[3]`` channel standard deviations (0-255 scale).

    Example:
        >>> maps = torch.full((1, 16, 16, 3), 100, dtype=torch.uint8)
        >>> standardise(maps, torch.full((3,), 90.0), torch.full((3,), 5.0))[0, :, 0, 0]
        tensor([2., 2., 2.])
    """
    images = maps.permute(0, 3, 1, 2).to(torch.float32)
    return (images - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
