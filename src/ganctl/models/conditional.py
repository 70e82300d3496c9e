"""Class conditioning for generators and critics, built around the unconditional networks.

Generators (`G(z, y)`):

- conditional batch norm (de Vries et al. 2017; WGAN-GP's `cond_batchnorm`, SN-GAN's
  `CategoricalConditionalBatchNormalization`): every batch norm of a DCGAN or ResNet generator
  normalises without its own affine and takes a per-class gain (initialised to 1) and bias (to 0);
- otherwise (an MLP generator, or a generator without batch norm) a label embedding of
  `classes` dimensions concatenated to z (Mirza & Osindero 2014; PyTorch-GAN's cgan).

Critics (`D(x, y)`), from the unconditional critic split into its features phi(x) and its last
linear map, the head:

- `projection` (Miyato & Koyama 2018): D(x, y) = head(phi(x)) + <V[y], phi(x)>, V an embedding;
- `acgan` (Odena et al. 2017, as WGAN-GP's conditional code): D's value is head(phi(x)), and a
  classifier over phi(x) gives class logits for the auxiliary cross-entropy;
- `concat` (MLP critics): D(x, y) = critic([flatten(x), E[y]]).

For a fixed y, x -> D(x, y) is what a penalty constrains and `ganctl gradnorm` measures: the
input gradient is taken with respect to x alone.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class ConditionalBatchNorm(nn.Module):
    """Batch norm without affine, then a per-class gain and bias: (B, C, ...) and labels (B,)."""

    def __init__(self, channels: int, classes: int, dims: int = 2):
        super().__init__()
        self.norm = (nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d)(channels, affine=False)
        self.gain, self.bias = nn.Embedding(classes, channels), nn.Embedding(classes, channels)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        shape = (len(x), -1) + (1,) * (x.dim() - 2)
        return self.norm(x) * self.gain(y).view(shape) + self.bias(y).view(shape)


def takes_labels(module: nn.Module) -> bool:
    return isinstance(module, (ConditionalBatchNorm, LabelSequential))


class LabelSequential(nn.Sequential):
    """A Sequential whose label-taking layers get the labels too."""

    def forward(self, x: Tensor, y: Tensor) -> Tensor:  # type: ignore[override]
        for module in self:
            x = module(x, y) if takes_labels(module) else module(x)
        return x


def with_conditional_norms(module: nn.Module, classes: int) -> nn.Module:
    """`module` with every BatchNorm2d replaced by a ConditionalBatchNorm (in place, recursively);
    a Sequential that held one becomes a LabelSequential."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, ConditionalBatchNorm(child.num_features, classes))
        else:
            with_conditional_norms(child, classes)
    if type(module) is nn.Sequential and any(takes_labels(m) for m in module):
        return LabelSequential(*module)
    return module


class NormConditionedGenerator(nn.Module):
    """A generator whose batch norms are conditional: G(z, y)."""

    def __init__(self, generator: nn.Module, classes: int):
        super().__init__()
        self.net = with_conditional_norms(generator, classes)

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        return self.net(z, y)


class ConcatGenerator(nn.Module):
    """G(z, y) = generator([z, E[y]]) for a generator built on z_dim + classes inputs."""

    def __init__(self, generator: nn.Module, classes: int):
        super().__init__()
        self.embed, self.net = nn.Embedding(classes, classes), generator

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        return self.net(torch.cat([z, self.embed(y)], dim=1))


class ConditionalCritic(nn.Module):
    """D(x, y) from features phi and a head (the unconditional critic's last linear map)."""

    def __init__(self, phi: nn.Module, head: nn.Module, kind: str, classes: int, features: int):
        super().__init__()
        self.phi, self.head, self.kind = phi, head, kind
        self.unit_rows = False  # projection: scale each class's row w + V[y] into the unit ball
        if kind == "projection":
            self.embed = nn.Embedding(classes, features)
            nn.init.xavier_uniform_(self.embed.weight)  # sngan_projection's l_y: SNEmbedID, GlorotUniform
        elif kind == "acgan":
            self.classifier = nn.Linear(features, classes)
        elif kind == "concat":
            self.embed = nn.Embedding(classes, classes)
        else:
            raise ValueError(f"unknown conditioning {kind!r}")

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.forward_all(x, y)[0]

    def forward_all(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor | None]:
        """The critic's value (B, 1) and, for acgan, its class logits (B, classes)."""
        if self.kind == "concat":
            return self.head(self.phi(torch.cat([x.flatten(1), self.embed(y)], dim=1))), None
        h = self.phi(x)
        f = h.flatten(1)
        if self.kind == "projection" and self.unit_rows:  # <w + V[y], f> / max(1, ||w + V[y]||) + b
            layer = self._head_layer()
            rows = layer.weight.reshape(1, -1) + self.embed(y)
            scale = torch.linalg.vector_norm(rows, dim=1, keepdim=True).clamp_min(1.0)
            value = (rows * f).sum(dim=1, keepdim=True) / scale
            return (value if layer.bias is None else value + layer.bias), None
        value = self.head(h)
        if self.kind == "projection":
            return value + (self.embed(y) * f).sum(dim=1, keepdim=True), None
        return value, self.classifier(f)

    def lipschitz_branches(self) -> list[list[tuple[str, nn.Module | float]]]:
        """For `ganctl gradnorm`'s upper bound at any fixed y: phi, then the head, which under
        projection is the linear functional w + V[y], whose norm is at most max_y ||w + V[y]||."""
        if self.kind != "projection":
            return [[("phi", self.phi), ("head", self.head)]]
        w = self._head_layer().weight.detach().reshape(1, -1)
        rows = (w + self.embed.weight.detach()).double()  # (classes, features)
        norms = torch.linalg.vector_norm(rows, dim=1)
        if self.unit_rows:  # each row scaled into the unit ball: its norm is at most 1
            norms = norms.clamp_max(1.0)
        return [[("phi", self.phi), ("head + projection", float(norms.max()))]]

    def _head_layer(self) -> nn.Module:
        """The head's linear layer (its `weight` under spectral norm or an orthogonal
        parametrization is the weight the forward uses, not its parameter)."""
        return next(m for m in self.head.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))


def split_head(critic: nn.Module) -> tuple[nn.Module, nn.Module]:
    """An unconditional critic as (phi, head): a Sequential ending in a linear layer (MLP), a
    convolution and a flatten (DCGAN), or a module with `features` and `linear` (ResNet)."""
    if isinstance(critic, nn.Sequential):
        mods = list(critic)
        if isinstance(mods[-1], nn.Linear):
            return nn.Sequential(*mods[:-1]), mods[-1]
        return nn.Sequential(*mods[:-2]), nn.Sequential(*mods[-2:])  # DCGAN: conv 4 x 4 -> 1, flatten
    return _Features(critic), critic.linear


class _Features(nn.Module):
    def __init__(self, critic: nn.Module):
        super().__init__()
        self.critic = critic

    def forward(self, x: Tensor) -> Tensor:
        return self.critic.features(x)

    def lipschitz_branches(self) -> list[list[tuple[str, nn.Module | float]]]:
        return self.critic.feature_branches()


def conditional_critic(critic: nn.Module, kind: str, classes: int, sample_shape: tuple[int, ...]) -> nn.Module:
    """The conditional critic of kind `kind` around an unconditional `critic` (built on the
    flattened input plus `classes` for concat)."""
    phi, head = split_head(critic)
    with torch.no_grad():
        probe = torch.zeros(2, math.prod(sample_shape) + classes) if kind == "concat" else torch.zeros(2, *sample_shape)
        features = phi(probe).flatten(1).shape[1]
    return ConditionalCritic(phi, head, kind, classes, features)
