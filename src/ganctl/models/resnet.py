"""The CIFAR ResNet of WGAN-GP (Gulrajani et al. 2017, appendix; also SN-GAN's 32 px ResNet).
`width` is the channel count of every block (128 in the papers).

Generator: linear z -> w x s x s, up-sampling residual blocks (BN, ReLU, nearest up-sampling,
3 x 3 conv, BN, ReLU, 3 x 3 conv; shortcut up-sampling and 1 x 1 conv) to the image size, then
BN, ReLU, a 3 x 3 conv to C channels and tanh. At 32 px, s = 4 and three blocks, as the papers;
at 16 px, s = 4 and two blocks; at 28 px (MNIST), s = 7 and two blocks. The batch norms are
`gen_norm`'s. Critic: an optimised first block (conv, ReLU, conv, average pooling; shortcut
pooling and 1 x 1 conv), a down-sampling block, two plain blocks, ReLU, the spatial mean and a
linear layer, at every size. `critic_norm` goes before each ReLU inside the critic's blocks
after the first.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from ganctl.config import TrainConfig
from ganctl.models import activations
from ganctl.models.conditional import ConditionalBatchNorm
from ganctl.models.dcgan import _norm2d, check_image_shape

RESNET_SIZES = (16, 28, 32)
_BOTTOM = {16: (4, 2), 28: (7, 2), 32: (4, 3)}  # the generator's first side and its up-sampling blocks


def _gen_norm(kind: str, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "batch" else _norm2d(kind, channels)


def _normed(norm: nn.Module, x: Tensor, y: Tensor | None) -> Tensor:
    """A generator's norm of x: a conditional one takes the labels too."""
    return norm(x, y) if isinstance(norm, ConditionalBatchNorm) else norm(x)


class UpBlock(nn.Module):
    def __init__(self, a: int, b: int, norm: str = "batch"):
        super().__init__()
        self.bn1, self.conv1 = _gen_norm(norm, a), nn.Conv2d(a, b, 3, 1, 1)
        self.bn2, self.conv2 = _gen_norm(norm, b), nn.Conv2d(b, b, 3, 1, 1)
        self.shortcut = nn.Conv2d(a, b, 1)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        h = F.interpolate(F.relu(_normed(self.bn1, x, y)), scale_factor=2.0, mode="nearest")
        h = self.conv2(F.relu(_normed(self.bn2, self.conv1(h), y)))
        return h + self.shortcut(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DownBlock(nn.Module):
    """A critic block: [norm] ReLU conv [norm] ReLU conv, optional 2 x 2 average pooling."""

    def __init__(self, a: int, b: int, norm: str, down: bool):
        super().__init__()
        self.n1, self.conv1 = _norm2d(norm, a), nn.Conv2d(a, b, 3, 1, 1)
        self.n2, self.conv2 = _norm2d(norm, b), nn.Conv2d(b, b, 3, 1, 1)
        self.down = down
        self.shortcut = nn.Conv2d(a, b, 1) if (down or a != b) else nn.Identity()

    def lipschitz_branches(self) -> list[list[tuple[str, nn.Module | float]]]:
        """Main path and shortcut for `ganctl gradnorm`'s upper bound (ReLU: 1, 2 x 2 average
        pooling: 1/2)."""
        pool = [("avg_pool", 0.5)] if self.down else []
        main = [("n1", self.n1), ("conv1", self.conv1), ("n2", self.n2), ("conv2", self.conv2), *pool]
        return [main, [("shortcut", self.shortcut), *pool]]

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv2(activations.relu(self.n2(self.conv1(activations.relu(self.n1(x))))))
        s = self.shortcut(x)
        if self.down:
            h, s = F.avg_pool2d(h, 2), F.avg_pool2d(s, 2)
        return h + s


class FirstBlock(nn.Module):
    def __init__(self, c: int, w: int):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c, w, 3, 1, 1), nn.Conv2d(w, w, 3, 1, 1)
        self.shortcut = nn.Conv2d(c, w, 1)

    def lipschitz_branches(self) -> list[list[tuple[str, nn.Module | float]]]:
        return [
            [("conv1", self.conv1), ("conv2", self.conv2), ("avg_pool", 0.5)],
            [("avg_pool", 0.5), ("shortcut", self.shortcut)],
        ]

    def forward(self, x: Tensor) -> Tensor:
        h = F.avg_pool2d(self.conv2(activations.relu(self.conv1(x))), 2)
        return h + self.shortcut(F.avg_pool2d(x, 2))


class Generator(nn.Module):
    def __init__(self, z_dim: int, w: int, c: int, size: int = 32, norm: str = "batch"):
        super().__init__()
        self.w, (self.side, ups) = w, _BOTTOM[size]
        self.linear = nn.Linear(z_dim, self.side * self.side * w)
        self.blocks = nn.Sequential(*(UpBlock(w, w, norm) for _ in range(ups)))
        self.bn, self.out = _gen_norm(norm, w), nn.Conv2d(w, c, 3, 1, 1)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """y: labels, for conditional batch norms (`ganctl.models.conditional`)."""
        h = self.linear(z).reshape(len(z), self.w, self.side, self.side)
        for block in self.blocks:
            h = block(h, y)
        return self.out(F.relu(_normed(self.bn, h, y))).tanh()


class SpatialMean(nn.Module):
    """The mean of each channel over H x W: (B, C, H, W) -> (B, C). A module of its own so that
    `ganctl gradnorm`'s bound counts its constant, 1/sqrt(H W)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3))


class Critic(nn.Module):
    def __init__(self, w: int, c: int, norm: str):
        super().__init__()
        self.blocks = nn.Sequential(
            FirstBlock(c, w), DownBlock(w, w, norm, True), DownBlock(w, w, norm, False), DownBlock(w, w, norm, False)
        )
        self.pool = SpatialMean()
        self.linear = nn.Linear(w, 1)

    def features(self, x: Tensor) -> Tensor:
        """The spatial mean of the last block's activations: (B, w)."""
        return self.pool(activations.relu(self.blocks(x)))

    def feature_branches(self) -> list[list[tuple[str, nn.Module | float]]]:
        return [[("blocks", self.blocks), ("pool", self.pool)]]  # ReLU: 1

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.features(x))


def build_resnet(cfg: TrainConfig, sample_shape: tuple[int, ...]) -> tuple[nn.Module, nn.Module]:
    c, size = check_image_shape("resnet", sample_shape, sizes=RESNET_SIZES)
    return Generator(cfg.z_dim, cfg.width, c, size, cfg.gen_norm), Critic(cfg.width, c, cfg.critic_norm)
