"""A convolutional critic that is 1-Lipschitz by construction: orthogonal convolutions (AOC),
orthonormal dense layers and MaxMin, from the `orthogonium` library (`pip install
'ganctl[certified]'`).

The recipe is the Adaptive Orthogonal Convolution scheme (Boissin, Mamalet, Fel, Picard, Massena
and Serrurier 2025, "An Adaptive Orthogonal Convolution Scheme for Efficient and Flexible CNN
Architectures", arXiv:2501.07930; deel-ai/orthogonium, `AdaptiveOrthoConv2d`): a k x k
stride-s convolution is the product of a BCOP convolution (Li et al. 2019: block convolutions
of orthogonal projectors, stride 1, kernel k - s + 1) and an RKO one (s x s kernel, stride s,
the reshaped kernel an orthonormal matrix), which composes into one explicit kernel that is
orthogonal as an operator on circularly padded images. Zero padding restricts that operator
(its input embeds isometrically, its outputs are a subset), so the zero-padded layer is
1-Lipschitz too; it is no longer exactly orthogonal at the border. Its activations are MaxMin
on channel pairs (GroupSort, Anil et al. 2019; orthogonium's pairing, a faster kernel), a
permutation in every region; its flatten is an
isometry; its dense layers are orthonormal (`OrthoLinear`), the last one a unit row.

`orthogonal_convolutional` converts an architecture's critic in place, layer by layer: each
`Conv2d` becomes an `AdaptiveOrthoConv2d` with the same channels, kernel, stride and (zero)
padding, each `Linear` an `OrthoLinear`, each ReLU / LeakyReLU a MaxMin; flattens and
non-overlapping average pooling stay (an isometry, and a map of norm exactly 1/side: Lipschitz,
not norm-preserving). `--arch dcgan`'s critic is then AOC's `StagedCNN` recipe with DCGAN's
strided 4 x 4 layers: its pooling is the strided orthogonal convolution, a learned
downsampling that keeps the norm where average pooling would shrink it. The orthogonaliser is QR
(orthogonium's `BatchedQROrthogonalization`, no spectral pre-normaliser) rather than its
default power iteration then 12 Björck steps: QR is exact to float rounding from any weight and
holds no state, whereas the default's power iteration updates its vectors in every forward, an
evaluation's included, so measuring a critic would change it and a resumed run would not retrace
its steps. The whole critic's bound is then measured, not assumed:
`ganctl.lipschitz.bounds.upper_bound` takes each layer's exact or certified spectral norm
(1 within float32 rounding).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

NEEDS = "--lipschitz aoc builds its critic with the orthogonium library: pip install 'ganctl[certified]'"


def _orthogonium():  # imported when such a critic is built: `import ganctl` stays light
    try:
        from orthogonium.layers import AdaptiveOrthoConv2d, OrthoLinear
        from orthogonium.reparametrizers import BatchedIdentity, BatchedQROrthogonalization, OrthoParams
    except ImportError as exc:
        raise ImportError(NEEDS) from exc
    exact = OrthoParams(spectral_normalizer=BatchedIdentity, orthogonalizer=BatchedQROrthogonalization)
    return AdaptiveOrthoConv2d, OrthoLinear, exact


class _SortPairs(torch.autograd.Function):
    """(a, b) -> (max(a, b), min(a, b)) for the two halves of dim 1, and its derivatives, as a
    `where` over a rolled copy: orthogonium's MaxMin (split, max, min, cat) gives the same
    values and gradients bit for bit at 2.1 to 2.3 times the cost (docs/results.md), except at
    an exact tie, where torch's max and min split the gradient in halves and this passes it
    whole to one unit: still a permutation of the incoming gradient. Returns the swap mask
    too, which backward and forward mode reuse."""

    generate_vmap_rule = True

    @staticmethod
    def forward(z: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        half = z.shape[1] // 2
        swap = z.narrow(1, 0, half) < z.narrow(1, half, half)
        swap = swap.repeat(1, 2, *([1] * (z.dim() - 2)))  # where a pair is out of order, take the other half's
        return torch.where(swap, z.roll(half, 1), z), swap

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[override]
        swap = output[1]
        ctx.mark_non_differentiable(swap)
        ctx.save_for_backward(swap)
        ctx.swap = swap  # forward mode reads it here (saved tensors are for backward)

    @staticmethod
    def _permute(swap: Tensor, t: Tensor) -> Tensor:
        return torch.where(swap, t.roll(t.shape[1] // 2, 1), t)

    @staticmethod
    def backward(ctx, grad: Tensor, _: Tensor) -> Tensor:  # type: ignore[override]
        (swap,) = ctx.saved_tensors
        return _SortPairs._permute(swap, grad)

    @staticmethod
    def jvp(ctx, tangent: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return _SortPairs._permute(ctx.swap, tangent), None


class MaxMin(nn.Module):
    """GroupSort with groups of two over channel halves (orthogonium's `MaxMin(axis=1)`): unit
    i and unit i + C/2 are sorted, the larger first. A permutation in every region."""

    def forward(self, z: Tensor) -> Tensor:
        return _SortPairs.apply(z)[0]


_ALLOWED = (nn.Sequential, nn.Flatten, nn.Identity)


def refusal(critic: nn.Module) -> str | None:
    """Why this critic cannot be made orthogonal layer by layer, or None."""
    for name, module in critic.named_modules():
        kind = type(module).__name__
        if getattr(module, "lipschitz_branches", None) is not None:
            return f"its residual block {name!r} adds two branches (a bound of 2, not 1): use --arch dcgan"
        if isinstance(module, nn.Conv2d):
            if module.groups != 1 or module.dilation != (1, 1) or isinstance(module.padding, str):
                return f"its convolution {name!r} is grouped, dilated or string-padded"
            if module.kernel_size[0] < module.stride[0] or module.kernel_size[1] < module.stride[1]:
                return f"its convolution {name!r} has a stride longer than its kernel (no orthogonal one exists)"
            if module.out_channels > 1 and module.out_channels % 2:
                channels = module.out_channels
                return f"its convolution {name!r} has {channels} channels: MaxMin pairs them (give an even --width)"
        elif isinstance(module, nn.Linear):
            if module.out_features > 1 and module.out_features % 2:
                return f"its layer {name!r} has {module.out_features} units: MaxMin pairs them (give an even --width)"
        elif isinstance(module, (nn.ReLU, nn.LeakyReLU)) or kind in ("Flatten", "MaxMin"):
            continue
        elif isinstance(module, nn.AvgPool2d) and module.kernel_size == module.stride and not module.padding:
            continue  # non-overlapping mean pooling: 1/side, exactly, in the bound
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.BatchNorm1d)):
            return f"its normalisation layer {name!r} has no Lipschitz bound of 1: use --critic-norm none"
        elif not isinstance(module, _ALLOWED) and any(True for _ in module.parameters(recurse=False)):
            return f"its layer {name!r} ({kind}) has no orthogonal counterpart"
        elif not isinstance(module, _ALLOWED) and name and not list(module.children()):
            return f"its layer {name!r} ({kind}) has no certified bound"
    return None


def orthogonal_convolutional(critic: nn.Module) -> nn.Module:
    """Make a critic of convolutions, dense layers, ReLU / LeakyReLU and flattens 1-Lipschitz
    in place (module docstring); `refusal` says which critics cannot be."""
    why = refusal(critic)
    if why is not None:
        raise ValueError(why)
    conv, linear, exact = _orthogonium()
    holder = nn.Sequential(critic)  # so that a critic which is itself one layer is replaced too
    for module in list(holder.modules()):
        for name, child in module.named_children():
            if isinstance(child, (nn.ReLU, nn.LeakyReLU)):
                setattr(module, name, MaxMin())
            elif type(child) is nn.Conv2d:
                padding = child.padding
                new = conv(
                    child.in_channels,
                    child.out_channels,
                    child.kernel_size[0] if child.kernel_size[0] == child.kernel_size[1] else child.kernel_size,
                    child.stride[0] if child.stride[0] == child.stride[1] else child.stride,
                    padding=padding,
                    bias=child.bias is not None,
                    padding_mode="zeros",
                    ortho_params=exact,
                )
                setattr(module, name, new)
            elif type(child) is nn.Linear:
                setattr(module, name, linear(child.in_features, child.out_features, child.bias is not None, exact))
    return holder[0]


def orthogonal_conditional(critic: nn.Module) -> nn.Module:
    """A conditional critic (`ganctl.models.conditional.ConditionalCritic`) made 1-Lipschitz in
    x at every label: its features and head converted, the label's own parts left as they are
    (concat's embedding enters beside x, AC-GAN's classifier is not part of the value), and under
    projection each class's row w + V[y] scaled into the unit ball in the forward."""
    critic.phi = orthogonal_convolutional(critic.phi)
    critic.head = orthogonal_convolutional(critic.head)
    critic.unit_rows = critic.kind == "projection"
    return critic
