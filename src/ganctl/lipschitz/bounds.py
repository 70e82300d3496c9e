"""Upper bounds on a critic's Lipschitz constant, layer by layer (exact spectral norms where a
layer's matrix can be formed, power iteration where not, certified constants for layers that are
1-Lipschitz by construction), and the certified lower bound on W1 that a certified critic gives
by Kantorovich-Rubinstein duality."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ganctl.lipschitz.transport import W1_POINTS, wasserstein1
from ganctl.nets.networks import Networks, eval_mode

POWER_ITERATIONS = 50


# --- the layer-wise upper bound ------------------------------------------------------------
@dataclass
class LayerBound:
    name: str
    kind: str
    bound: float  # inf where no finite constant exists
    how: str
    certainty: str  # exact | certified (an upper bound by construction) | estimated | none


ROUNDING_MARGIN = 1e-10  # relative: float64 SVDs are accurate to ~1e-15, certified bounds get this much room


def dense_norm(weight: Tensor) -> float:
    """||W||_2, exactly (the largest singular value, float64 SVD)."""
    return float(torch.linalg.matrix_norm(weight.detach().double().cpu(), ord=2))


EXPLICIT_MAX_SIDE = 1024  # a layer whose matrix has a side this short is measured exactly


EXPLICIT_MAX_ENTRIES = 1 << 24


def explicit_norm(
    layer: Callable[[Tensor], Tensor], shape: tuple[int, ...], device: torch.device | str = "cpu"
) -> float | None:
    """The operator norm of a layer's linear part from its explicit matrix (float64 SVD), built
    along its shorter side (vector-Jacobian products for few outputs, the images of a basis for
    few inputs) on a float64 copy of the layer; None when the matrix is too large for that."""
    layer = copy.deepcopy(layer).double() if isinstance(layer, nn.Module) else layer
    zero = torch.zeros((1, *shape), device=device, dtype=torch.float64)
    with torch.no_grad():
        offset = layer(zero)
    d_in, d_out = math.prod(shape), offset.numel()
    if min(d_in, d_out) > EXPLICIT_MAX_SIDE or d_in * d_out > EXPLICIT_MAX_ENTRIES:
        return None
    if d_out <= d_in:
        x = zero.clone().requires_grad_(True)
        with torch.enable_grad():
            y = layer(x).flatten()
        basis = torch.eye(d_out, device=device, dtype=y.dtype)
        (matrix,) = torch.autograd.grad(y, x, basis, is_grads_batched=True)
        matrix = matrix.reshape(d_out, d_in)
    else:
        with torch.no_grad():
            basis = torch.eye(d_in, device=device, dtype=torch.float64).reshape(d_in, *shape)
            matrix = torch.cat([layer(b) - offset for b in basis.split(256)]).reshape(d_in, d_out)
    return float(torch.linalg.matrix_norm(matrix.detach().cpu(), ord=2))


def conv2d_bound(weight: Tensor, stride: tuple[int, int], padding: tuple[int, int], in_hw: tuple[int, int]) -> float:
    """A certified upper bound on the operator norm of a zero-padded, strided 2-D convolution
    (groups 1, dilation 1) on inputs of spatial size in_hw.

    The zero-padded convolution is a restriction of a circular one on an N x N grid
    (N >= n + p, a multiple of the stride, with at least as many outputs): the input embeds with
    zeros (an isometry) and the outputs are a subset (a contraction), so its norm is at most the
    circular one's. A strided circular convolution is, after splitting its input into its
    stride x stride polyphase components (a permutation), a stride-1 circular convolution on the
    (N / s) grid with c_in * s^2 input channels, whose norm is exactly the largest spectral norm
    of its transfer matrices T(w) (c_out x c_in s^2) over the grid's frequencies. Each is taken
    by a complex128 SVD. Exact for circular padding; tight to a few per cent for the usual
    zero-padded layers (the tests compare it with the explicit matrix's SVD)."""
    k = weight.detach().double().cpu()
    axes = []
    for n, kernel, s, p in zip(in_hw, k.shape[2:], stride, padding):
        n_out = (n + 2 * p - kernel) // s + 1
        m = max(n_out, -(-(n + p) // s))  # outputs of the circular grid N = s * m
        taps = torch.arange(kernel)
        phase, shift = (taps - p) % s, torch.div(taps - p, s, rounding_mode="floor")
        freqs = torch.arange(m, dtype=torch.float64)
        e = torch.zeros(kernel, s, m, dtype=torch.complex128)
        e[taps, phase] = torch.exp(-2j * math.pi * shift[:, None].double() * freqs[None, :] / m)
        axes.append(e)
    eh, ew = axes
    transfer = torch.einsum("ocab,arx,bsy->xyocrs", k.to(torch.complex128), eh, ew)
    m_h, m_w, c_out = transfer.shape[:3]
    transfer = transfer.reshape(m_h * m_w, c_out, -1)
    return float(torch.linalg.matrix_norm(transfer, ord=2).max()) * (1.0 + ROUNDING_MARGIN)


def operator_norm(
    fn: Callable[[Tensor], Tensor],
    shape: tuple[int, ...],
    iterations: int = POWER_ITERATIONS,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> float:
    """An estimate of the operator norm of the affine map `fn` (bias removed: fn(x) - fn(0)) on
    inputs of `shape` (batch of one), by power iteration on A^T A from a seeded start. It
    approaches the norm from below: an estimate, not a bound."""
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(0)
    zero = torch.zeros((1, *shape), device=device)
    with torch.no_grad():
        offset = fn(zero)
    x = torch.randn((1, *shape), generator=generator, device=device)
    x = x / x.norm()
    sigma = 0.0
    for _ in range(iterations):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            ax = fn(x) - offset
            (ata_x,) = torch.autograd.grad(0.5 * ax.pow(2).sum(), x)
        sigma = float(ax.detach().norm())
        norm = ata_x.norm()
        if norm == 0:
            return 0.0
        x = ata_x / norm
    with torch.no_grad():
        return max(sigma, float((fn(x) - offset).norm()))


_UNIT = (nn.ReLU, nn.Tanh, nn.Identity, nn.Flatten, nn.Dropout)


_LINEAR_MAPS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.AvgPool2d, nn.Upsample)


def _from_orthogonium(module: nn.Module) -> bool:
    """A layer of the orthogonium library (its parametrized subclass included)."""
    return any(c.__module__.startswith("orthogonium") for c in type(module).__mro__)


def _parametrized_as(module: nn.Module) -> str:
    if not hasattr(module, "parametrizations"):
        return ""
    if _from_orthogonium(module):
        return " (orthogonium's AOC-orthogonalised kernel, as evaluated)"
    kinds = {type(p).__name__ for p in module.parametrizations["weight"]}
    what = "Björck-orthonormalised" if "Bjorck" in kinds else "spectral-normalised"
    return f" ({what} weight, as evaluated)"


def _frozen(module: nn.Module) -> nn.Module:
    """A plain layer holding the weight of an orthogonium layer as evaluated now (it builds its
    kernel from several parametrized factors, which a float64 copy could not run)."""
    if not _from_orthogonium(module):
        return module
    with torch.no_grad(), eval_mode(module):
        weight = module.weight.detach().clone()
    bias = module.bias is not None
    if isinstance(module, nn.Linear):
        plain: nn.Module = nn.Linear(module.in_features, module.out_features, bias=bias)
    elif isinstance(module, nn.Conv2d):
        plain = nn.Conv2d(
            module.in_channels,
            module.out_channels,
            module.kernel_size,
            module.stride,
            module.padding,
            module.dilation,
            module.groups,
            bias,
            module.padding_mode,
        )
    else:
        return module
    plain = plain.to(weight.device)
    with torch.no_grad():
        plain.weight.copy_(weight)
        if bias:
            plain.bias.copy_(module.bias)
    return plain


def _layer_bound(name: str, module: nn.Module, in_shape: tuple[int, ...], device: torch.device) -> LayerBound:
    kind = type(module).__name__
    if kind == "MaxMin":  # GroupSort: a permutation in every region
        return LayerBound(name, kind, 1.0, "GroupSort (MaxMin): 1-Lipschitz, gradient-norm preserving", "exact")
    if kind == "GradientNormalized":
        why = "gradient normalisation: piecewise 1-Lipschitz where f is piecewise linear, no global constant"
        return LayerBound(name, kind, math.inf, why, "none")
    sn = _parametrized_as(module)
    module = _frozen(module)
    if isinstance(module, nn.Linear):
        return LayerBound(name, kind, dense_norm(module.weight), f"largest singular value{sn}", "exact")
    if isinstance(module, _LINEAR_MAPS):
        exact = explicit_norm(module, in_shape, device)
        if exact is not None:
            return LayerBound(name, kind, exact, f"largest singular value of the explicit matrix{sn}", "exact")
    if (
        isinstance(module, nn.Conv2d)
        and module.groups == 1
        and module.dilation == (1, 1)
        and module.padding_mode == "zeros"
        and not isinstance(module.padding, str)
    ):
        bound = conv2d_bound(module.weight, module.stride, module.padding, in_shape[1:])
        return LayerBound(name, kind, bound, f"circular embedding, polyphase transfer matrices{sn}", "certified")
    if isinstance(module, nn.AvgPool2d) and module.kernel_size == module.stride and module.padding == 0:
        side = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
        return LayerBound(name, kind, 1.0 / side, "non-overlapping mean of side x side: 1/side", "exact")
    if kind == "SpatialMean":  # the mean over H x W of each channel: 1/sqrt(H W)
        return LayerBound(name, kind, 1.0 / math.sqrt(in_shape[-1] * in_shape[-2]), "1/sqrt(H W)", "exact")
    if isinstance(module, _LINEAR_MAPS):
        estimate = operator_norm(module, in_shape, device=device)
        return LayerBound(name, kind, estimate, f"power iteration on the layer's map (seeded){sn}", "estimated")
    if isinstance(module, nn.LeakyReLU):
        return LayerBound(name, kind, max(1.0, abs(module.negative_slope)), "max(1, |slope|)", "exact")
    if isinstance(module, _UNIT) or kind in ("Flatten", "Unflatten"):
        return LayerBound(name, kind, 1.0, "1-Lipschitz", "exact")
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        scale = (module.weight if module.affine else torch.ones_like(module.running_var)).abs()
        return LayerBound(
            name,
            kind,
            float((scale / torch.sqrt(module.running_var + module.eps)).max()),
            "max |gamma| / sqrt(running var + eps) (eval mode)",
            "exact",
        )
    if isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
        reason = "no global Lipschitz constant (normalisation by the input's own scale)"
        return LayerBound(name, kind, math.inf, reason, "none")
    return LayerBound(name, kind, math.inf, "unknown layer: no bound", "none")


def upper_bound(
    critic: nn.Module, sample_shape: tuple[int, ...], device: torch.device | str = "cpu", conditional: bool = False
) -> tuple[float, list[LayerBound]]:
    """The product of per-layer constants along the critic (branches of a residual block
    add), and the per-layer table. The product is a certified bound when every factor is exact
    or certified (`certified(table)`). A conditional critic's bound holds at every label."""
    device = torch.device(device)
    shapes: dict[nn.Module, tuple[int, ...]] = {}

    def record(mod: nn.Module, args: tuple) -> None:  # a pre-hook must return None
        if args and torch.is_tensor(args[0]):
            shapes.setdefault(mod, tuple(args[0].shape[1:]))

    hooks = [m.register_forward_pre_hook(record) for m in critic.modules()]
    with eval_mode(critic):
        try:
            with torch.no_grad():
                x = torch.zeros((1, *sample_shape), device=device)
                critic(x, torch.zeros(1, dtype=torch.long, device=device)) if conditional else critic(x)
        finally:
            for h in hooks:
                h.remove()
        table: list[LayerBound] = []
        total = _bound(critic, "", shapes, table, device)
    return total, table


def certified(table: list[LayerBound]) -> bool:
    return all(e.certainty in ("exact", "certified") for e in table)


def _bound(module: nn.Module, name: str, shapes: dict, table: list[LayerBound], device: torch.device) -> float:
    branches = getattr(module, "lipschitz_branches", None)
    if branches is not None:  # a residual block: sum over branches of the product along each
        total = 0.0
        for branch in branches():
            prod = 1.0
            for child_name, child in branch:
                if isinstance(child, float):  # a functional step with a known constant
                    prod *= child
                    continue
                prod *= _bound(child, f"{name}.{child_name}" if name else child_name, shapes, table, device)
            total += prod
        return total
    if isinstance(module, nn.Sequential) or (len(list(module.children())) and not _is_leaf(module)):
        prod = 1.0
        for child_name, child in module.named_children():
            if child in shapes:
                prod *= _bound(child, f"{name}.{child_name}" if name else child_name, shapes, table, device)
        return prod
    entry = _layer_bound(name, module, shapes[module], device)
    table.append(entry)
    return entry.bound


def _is_leaf(module: nn.Module) -> bool:
    # A parametrized (spectral-norm, Björck) layer has children (its parametrizations) but is one
    # layer; gradient normalisation is one map of the whole critic, not a product of layers.
    return (
        hasattr(module, "parametrizations")
        or isinstance(module, (nn.Linear, nn.Conv2d))
        or type(module).__name__ == "GradientNormalized"
    )


VALUE_CHUNK = 512  # samples per forward when a critic reads a whole held-out set


def critic_values(critic: nn.Module, x: Tensor) -> Tensor:
    """D(x) in eval mode, float64 on the CPU, in chunks moved to the critic's device."""
    device = next(critic.parameters()).device
    with eval_mode(critic), torch.no_grad():
        return torch.cat([critic(c.to(device)).double().reshape(-1).cpu() for c in x.split(VALUE_CHUNK)])


def w1_lower_bound(critic: nn.Module, real: Tensor, fake: Tensor, lipschitz: float) -> dict[str, float]:
    """(E D(real) - E D(fake)) / L for a critic certified L-Lipschitz: by Kantorovich-Rubinstein
    duality a lower bound on W1 between the two distributions, estimated on these (held-out)
    samples with its standard error sqrt(Var D(real) / n + Var D(fake) / m) / L. On the samples'
    own empirical measures it is a bound outright: for any matching, the mean distance is at
    least the mean of (D(x) - D(y)) / L, so it never exceeds their exact W1."""
    vr, vf = critic_values(critic, real), critic_values(critic, fake)
    gap = float(vr.mean() - vf.mean())
    se = math.sqrt(float(vr.var()) / len(vr) + float(vf.var()) / len(vf)) if min(len(vr), len(vf)) > 1 else math.nan
    return {"value": gap / lipschitz, "se": se / lipschitz, "lipschitz": lipschitz, "critic_gap": gap, "n": len(vr)}


def certified_w1_report(nets: Networks, real: Tensor, fake: Tensor, upper: dict[str, Any]) -> dict[str, Any] | None:
    """The certified W1 lower bound on the first W1_POINTS pairs, and on 2-D data the exact
    empirical W1 of the same samples beside it; None for a critic whose bound is not certified
    (or a conditional one: its gap bounds the classes' W1, not the joint one)."""
    if not upper["certified"] or nets.cfg.conditional:
        return None

    k = min(len(real), W1_POINTS)
    bound = w1_lower_bound(nets.critic, real[:k], fake[:k], upper["value"])
    if real.dim() == 2:
        bound["w1_exact"] = wasserstein1(fake[:k].float(), real[:k].float())
    return bound


def upper_bound_report(
    critic: nn.Module, shape: tuple[int, ...], device: torch.device, conditional: bool = False
) -> dict[str, Any]:
    total, table = upper_bound(critic, shape, device, conditional)
    return {
        "value": total if math.isfinite(total) else None,
        "certified": math.isfinite(total) and certified(table),
        "method": "product of per-layer constants: dense layers exact, convolutions certified (circular"
        " embedding), others estimated by seeded power iteration where marked",
        "layers": [vars(e) | {"bound": e.bound if math.isfinite(e.bound) else None} for e in table],
    }
