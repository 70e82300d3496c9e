"""How Lipschitz a critic really is: the distribution of ||grad_x D(x)|| on point sets, an
empirical lower bound, a layer-wise upper bound, and transport alignment.

Every gradient comes from `ganctl.methods.penalties.input_grads`, the function training penalises,
taken in eval mode (spectral norm then runs no power iteration, so measuring changes nothing).

Upper bound: the product, over the critic's layers in order, of each layer's Lipschitz
constant. A linear layer's constant is its operator norm as the map it computes on its real
input shape, found by power iteration on A^T A through autograd (x <- grad of ||A x||^2 / 2),
so a convolution's norm accounts for its stride and padding, not the reshaped kernel's. ReLU,
LeakyReLU (slope <= 1), tanh and flattening have constant 1; batch norm in eval mode is a
per-channel scale; layer norm has no global constant, so a critic with it has no finite bound
(reported as such). Residual blocks add their branches' bounds.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn

from ganctl import memory, progress, streams
from ganctl.data import sample_shape
from ganctl.measure.defaults import GRADNORM_N as DEFAULT_N
from ganctl.measure.defaults import TOL as DEFAULT_TOL
from ganctl.methods import penalties
from ganctl.methods.losses import gap_stats
from ganctl.nets.augment import as_trained
from ganctl.nets.networks import Networks, eval_mode

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
VANISHING = 1e-3
POWER_ITERATIONS = 50
BATCH_VALUES = 1 << 22
ALIGNMENT_PAIRS = 512  # the exact coupling is O(n^3): 512 pairs take 0.05 s with scipy
# Measured references (8gaussians, 512 pairs, 5 seeds, the optimal critic -<x, v/|v|> of a copy
# shifted by v): |v| -> (mean alignment on optimally coupled pairs, on independent pairs).
ALIGNMENT_REFERENCE = {0.1: (0.91, 0.15), 0.5: (0.92, 0.25), 2.0: (0.99, 0.66)}


def gradient_norms(
    critic: nn.Module, x: Tensor, batch: int | None = None, y: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """(D(x), ||grad D(x)||) per sample, in eval mode, in batches of `batch` (by default 4096
    points, fewer for images: about 4 million input values a batch); a conditional critic at
    the labels y (the gradient with respect to x alone)."""
    if batch is None:
        batch = min(4096, max(1, BATCH_VALUES // max(1, x[0].numel())))
    values, norms = [], []
    labels = y.split(batch) if y is not None else [None] * len(x.split(batch))
    with eval_mode(critic):
        for chunk, at in zip(x.split(batch), labels):
            out, grads = penalties.input_grads(critic, chunk, y=at)
            values.append(out.detach().reshape(-1))
            norms.append(penalties.grad_norm(grads).detach())
    return torch.cat(values), torch.cat(norms)


def summarise(norms: Tensor, tol: float = DEFAULT_TOL) -> dict[str, float]:
    """count, mean, std, min, quantiles, max and the shares above 1 + tol, below 1 - tol and
    below 1e-3 (vanishing)."""
    x = norms.detach().double().cpu()
    q = torch.quantile(x, torch.tensor(QUANTILES, dtype=torch.float64))
    stats = {
        "count": len(x),
        "mean": float(x.mean()),
        "std": float(x.std()) if len(x) > 1 else 0.0,
        "min": float(x.min()),
    }
    stats.update({f"q{round(p * 100):02d}": float(v) for p, v in zip(QUANTILES, q)})
    stats.update(
        {
            "max": float(x.max()),
            "above": float((x > 1.0 + tol).double().mean()),
            "below": float((x < 1.0 - tol).double().mean()),
            "vanishing": float((x < VANISHING).double().mean()),
        }
    )
    return stats


def optimal_coupling(real: Tensor, fake: Tensor) -> Tensor:
    """The permutation `perm` that pairs real[i] with fake[perm[i]] at the least total
    Euclidean distance: the empirical optimal transport plan of W1 between the two sets."""
    from ganctl.measure.quality import linear_assignment

    cost = torch.cdist(real.flatten(1).double().cpu(), fake.flatten(1).double().cpu())
    return torch.from_numpy(linear_assignment(cost.numpy())).to(fake.device)


def alignment(
    critic: nn.Module, real: Tensor, fake: Tensor, generator: torch.Generator, y: Tensor | None = None
) -> Tensor:
    """cos(grad D(x_hat), x_real - x_fake) at x_hat = e x_real + (1 - e) x_fake for the given
    pairs (sign: a critic that rises towards the data scores positive).

    For the optimal Wasserstein critic on pairs of the optimal coupling it is 1 (Gulrajani et
    al. 2017, Proposition 1); on a finite sample, the empirical coupling is not the population
    one, and the optimal critic of a shifted copy of 8gaussians scores 0.91 / 0.92 / 0.99 on
    512 coupled pairs for shifts of length 0.1 / 0.5 / 2 (ALIGNMENT_REFERENCE). Independent
    pairs do not score near 0 either: the same critic scores 0.15 / 0.25 / 0.66 on them, more
    the larger the shift. So the number says how far a critic's gradients follow the transport
    direction, on a scale whose top is about 0.9 at this sample size, not 1."""
    x_hat = penalties.interpolate(real, fake, generator)
    with eval_mode(critic):
        _, grads = penalties.input_grads(critic, x_hat, y=y)
    g, d = grads.flatten(1), (real - fake).flatten(1)
    return torch.nn.functional.cosine_similarity(g, d, dim=1, eps=1e-12).detach()


@torch.no_grad()
def empirical_lower_bound(critic: nn.Module, x: Tensor, y: Tensor, labels: Tensor | None = None) -> float:
    """max |D(x_i) - D(y_i)| / ||x_i - y_i|| over the given pairs: a lower bound on the
    critic's Lipschitz constant (any pair is a witness; a conditional critic's pairs share
    their label)."""
    with eval_mode(critic):
        dx = torch.linalg.vector_norm((x - y).flatten(1), dim=1)
        at = (lambda v: critic(v)) if labels is None else (lambda v: critic(v, labels))
        dd = (at(x) - at(y)).reshape(-1).abs()
    keep = dx > 1e-12
    return float((dd[keep] / dx[keep]).max()) if keep.any() else 0.0


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


def _parametrized_as(module: nn.Module) -> str:
    if not hasattr(module, "parametrizations"):
        return ""
    kinds = {type(p).__name__ for p in module.parametrizations["weight"]}
    what = "Björck-orthonormalised" if "Bjorck" in kinds else "spectral-normalised"
    return f" ({what} weight, as evaluated)"


def _layer_bound(name: str, module: nn.Module, in_shape: tuple[int, ...], device: torch.device) -> LayerBound:
    kind = type(module).__name__
    if kind == "MaxMin":  # GroupSort: a permutation in every region
        return LayerBound(name, kind, 1.0, "GroupSort (MaxMin): 1-Lipschitz, gradient-norm preserving", "exact")
    if kind == "GradientNormalized":
        why = "gradient normalisation: piecewise 1-Lipschitz where f is piecewise linear, no global constant"
        return LayerBound(name, kind, math.inf, why, "none")
    sn = _parametrized_as(module)
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


# --- the whole report -------------------------------------------------------------------
def verdict(interp: dict[str, float], tol: float, loss: str = "wasserstein") -> tuple[str, str]:
    """One word and a sentence for the interpolate norms. Unit norm on the transport paths is a
    property of the optimal critic of the Wasserstein loss only (Gulrajani et al. 2017,
    Proposition 1), so only a Wasserstein critic below it is said to under-use its bound."""
    if interp["vanishing"] > 0.5 or interp["q50"] < 1e-2:
        return "vanishing", f"median norm {interp['q50']:.3g}: the critic is nearly flat where the penalty looks"
    if interp["q50"] > 10.0:
        return "exploding", f"median norm {interp['q50']:.3g}: far above 1"
    if interp["above"] > 0.05:
        return "violating", f"{interp['above']:.1%} of interpolates have norm above 1 + {tol}"
    if interp["below"] > 0.5 and loss == "wasserstein":
        return (
            "under-using",
            f"{interp['below']:.1%} of interpolates have norm below 1 - {tol}: Lipschitz, but the optimal Wasserstein"
            " critic has unit norm on its transport paths",
        )
    if interp["below"] > 0.5:
        return (
            "inside the bound",
            f"{interp['below']:.1%} of interpolates have norm below 1 - {tol} (no unit-norm optimum applies to the"
            f" {loss} loss)",
        )
    return "within tolerance", f"{1 - interp['above'] - interp['below']:.1%} of interpolates within 1 +/- {tol}"


def _verdict(interp: dict[str, float], tol: float, cfg: Any) -> Verdict:
    status, detail = verdict(interp, tol, cfg.loss)
    return Verdict(status, detail, strength_note(status, cfg))  # type: ignore[arg-type]


def _one(_: object) -> int:
    return 1


class RealPoints(NamedTuple):
    x: Tensor  # (n, ...) on the networks' device
    y: Tensor | None  # their labels, for a conditional critic


def check_points(nets: Networks, n: int) -> None:
    """Each point set and its gradients are held at once (real, fake, interpolates, noise, and
    the norms' batches on top): refuse a count that cannot fit before drawing any of them."""
    values = math.prod(sample_shape(nets.cfg))
    memory.require(6 * n * values * memory.FLOAT, f"--n {n}: {n:,} points of {values:,} values a set", str(nets.device))


def real_points(nets: Networks, n: int, seed: int = 0, data: str | None = None) -> RealPoints:
    """n real points on the networks' device (with their labels for a conditional run), from a
    stream seeded by `seed`: from the checkpoint's own data, or from `data` (any `--data` value)
    when given, which must have the critic's input shape (and its classes)."""
    import dataclasses

    from ganctl.data import load_dataset
    from ganctl.errors import DataError

    check_points(nets, n)
    g = torch.Generator(device=nets.device)
    g.manual_seed(seed)
    source = nets.dataset if data is None else load_dataset(dataclasses.replace(nets.cfg, data=data))
    if nets.cfg.conditional:
        if source.classes.count != nets.cfg.num_classes:
            raise DataError(
                f"--data {data}: {source.classes.count} classes, but this critic takes {nets.cfg.num_classes}"
            )
        points = RealPoints(*source.sample_labelled(n, g, nets.device))
    else:
        points = RealPoints(source.sample(n, g, nets.device), None)
    expected = sample_shape(nets.cfg)
    if tuple(points.x.shape[1:]) != expected:
        raise DataError(
            f"--data {data}: its points have shape {tuple(points.x.shape[1:])}, but this critic takes {expected}"
            f" (the checkpoint was trained on {nets.cfg.data})"
        )
    return points


@dataclass(frozen=True)
class Measure:
    """How `ganctl gradnorm` measures a checkpoint: points per set, seed, tolerance, which
    generator, real points from other data, and the noise of an extra set around real points."""

    n: int = DEFAULT_N
    seed: int = 0
    tol: float = DEFAULT_TOL
    raw: bool = False
    data: str | None = None
    noise_std: float | None = None


Status = Literal["vanishing", "exploding", "violating", "under-using", "inside the bound", "within tolerance"]


@dataclass(frozen=True)
class Verdict:
    status: Status  # one word for the interpolate norms
    detail: str  # the sentence behind it, with its numbers
    note: str | None = None  # why a run's own settings give this verdict, where they explain it


def strength_note(status: str, cfg: Any) -> str | None:
    """A gradient-penalty critic over its bound, when the run's penalty is weaker than the
    paper's: the verdict is what that weight buys, not a broken run. WGAN-GP's 2-D default is
    its toy code's lambda 0.1 (gan_toy.py), a hundred times the images' 10's weakness, which
    lets the critic's norm rise above 1 for better samples (docs/results.md)."""
    from ganctl.methods.registry import get_method

    method = get_method(cfg.lipschitz)
    if status not in ("violating", "exploding") or "gp_target" not in method.owns or cfg.penalty_weight is None:
        return None  # only a penalty towards a unit norm (WGAN-GP's) is weakened into exceeding it
    paper = method.recipe.penalty_weight
    if paper is None or cfg.penalty_weight >= paper:
        return None
    return (
        f"this critic was trained with lambda {cfg.penalty_weight:g}, weaker than WGAN-GP's {paper:g} on images:"
        f" a weak penalty buys sample quality with the constraint (on 2-D data lambda 0.1 is WGAN-GP's toy code,"
        f" gan_toy.py); train with --lambda {paper:g} to hold the critic near norm 1"
    )


@dataclass(frozen=True)
class LowerBound:
    """An empirical lower bound on the critic's Lipschitz constant: the largest difference
    quotient over the measured pairs and the largest input-gradient norm seen."""

    pairs: float
    max_grad_norm: float
    value: float


@dataclass
class Report:
    """`ganctl gradnorm`'s report on one checkpoint (`to_dict` is its --json): per point set the
    statistics of ||grad D|| (`summarise`'s), per class for a conditional critic, the critic's
    gap, transport alignment, both Lipschitz bounds, the certified W1 lower bound where one
    holds, and the verdict."""

    n: int
    seed: int
    tol: float
    step: int
    generator: Literal["ema", "raw"]
    sets: dict[str, dict[str, float]]  # real, fake, interp (and real+noise): summarise()'s statistics
    critic_gap: float
    alignment: dict[str, Any]
    lower_bound: LowerBound
    verdict: Verdict
    seconds: float
    wasserstein: float | None = None  # the gap read as a W1 estimate: Wasserstein critics only
    classes: dict[str, dict[str, dict[str, float]]] | None = None  # a conditional critic's, per class
    upper_bound: dict[str, Any] | None = None  # value, certified, method, per-layer table
    w1_lower_bound: dict[str, Any] | None = None  # a certified critic's only
    checkpoint: str | None = None  # what the command measured, and its gate
    data: str | None = None
    thresholds: dict[str, Any] | None = None
    augment: dict[str, Any] | None = None  # a run that augments: measured through its policy at probability p

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON; a field that does not apply (None) is left out."""
        import dataclasses

        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None or k == "w1_lower_bound"}


@dataclass
class Analysis:
    """`analyse`'s result: the report (plain data, what --json prints) and the norms behind its
    per-set statistics (tensors, for histograms)."""

    report: Report
    norms: dict[str, Tensor]

    def gate_values(self) -> dict[str, float]:
        return gate_values(self.report)


def gate_values(report: Report) -> dict[str, float]:
    """The numbers of a report that the CI thresholds judge (`ganctl.measure.metrics.GRADNORM_THRESHOLDS`):
    the interpolates' violation share and mean norm, and the largest norm of any set."""
    sets = report.sets
    return {
        "violation_share": sets["interp"]["above"],
        "max_norm": max(s["max"] for s in sets.values()),
        "interp_mean": sets["interp"]["mean"],
    }


def analyse(
    nets: Networks,
    n: int = DEFAULT_N,
    seed: int = 0,
    tol: float = DEFAULT_TOL,
    raw: bool = False,
    noise_std: float | None = None,
    real: RealPoints | None = None,
    bounds: bool = True,
) -> Analysis:
    """The full report for a checkpoint's networks (`ganctl.load`) or a trainer: per point set
    statistics (and per class, for a conditional critic, whose every point is taken at its
    label), bounds, alignment, verdict, and the time it took."""
    started = time.perf_counter()
    device = nets.device
    check_points(nets, n)
    real = real if real is not None else real_points(nets, n, seed)
    x, y = real.x[:n].to(device), real.y[:n].to(device) if real.y is not None else None
    g = torch.Generator(device=device)  # latents, interpolation and noise: a stream apart from
    g.manual_seed(seed + streams.ANALYSIS_FAKE)  # the real points', so passing `real` in changes nothing else
    n = len(x)
    fake = nets.sample(n, g, raw=raw, labels=y)  # a conditional generator draws the real points' classes
    sets = {"real": x, "fake": fake, "interp": penalties.interpolate(x, fake, g)}
    if noise_std:
        sets["real+noise"] = x + noise_std * torch.randn(x.shape, generator=g, device=device)
    norms_by_set, values_by_set, stats = {}, {}, {}
    # A run that augments is measured as it trains: through its augmentation, at its current
    # probability, with respect to the un-augmented points (the penalties' convention).
    seen = as_trained(nets.critic, nets.augment, g)
    for name, points in progress.counted(sets.items(), f"gradient norms at {n:,} points a set", len(sets), _one):
        values_by_set[name], norms_by_set[name] = gradient_norms(seen, points, y=y)
        stats[name] = summarise(norms_by_set[name], tol)
    gap = gap_stats(float(values_by_set["real"].double().mean() - values_by_set["fake"].double().mean()), nets.cfg.loss)
    pair_bound = empirical_lower_bound(nets.critic, x, fake, y)
    largest = max(float(v.max()) for v in norms_by_set.values())
    report = Report(
        n=n,
        seed=seed,
        tol=tol,
        step=nets.step,
        generator="raw" if raw or nets.ema is None else "ema",
        sets=stats,
        critic_gap=gap["critic_gap"],
        wasserstein=gap.get("wasserstein"),  # on these points
        classes=_by_class(nets, norms_by_set, y, tol) if y is not None else None,
        alignment=_alignment_summary(nets.critic, x, fake, g, y),
        lower_bound=LowerBound(pair_bound, largest, max(pair_bound, largest)),
        verdict=_verdict(stats["interp"], tol, nets.cfg),
        seconds=0.0,
    )
    if bounds:
        report.upper_bound = _upper_bound_report(nets.critic, tuple(x.shape[1:]), device, nets.cfg.conditional)
        report.w1_lower_bound = certified_w1_report(nets, x, fake, report.upper_bound)
    if seen is not nets.critic:  # the bound of what was measured, D o T: the critic's times T's
        factor = nets.augment.augment.lipschitz_factor(int(x.shape[1]))
        report.augment = {"policy": nets.cfg.augment, "p": nets.augment.p, "lipschitz_factor": factor}
        if report.upper_bound is not None and report.upper_bound["value"] is not None:  # None: no finite bound
            report.augment["upper_bound"] = report.upper_bound["value"] * factor
    report.seconds = round(time.perf_counter() - started, 3)
    return Analysis(report, norms_by_set)


def w1_lower_bound(critic: nn.Module, real: Tensor, fake: Tensor, lipschitz: float) -> dict[str, float]:
    """(E D(real) - E D(fake)) / L for a critic certified L-Lipschitz: by Kantorovich-Rubinstein
    duality a lower bound on W1 between the two distributions, estimated on these (held-out)
    samples with its standard error sqrt(Var D(real) / n + Var D(fake) / m) / L. On the samples'
    own empirical measures it is a bound outright: for any matching, the mean distance is at
    least the mean of (D(x) - D(y)) / L, so it never exceeds their exact W1."""
    with eval_mode(critic), torch.no_grad():
        vr, vf = critic(real).double().reshape(-1), critic(fake).double().reshape(-1)
    gap = float(vr.mean() - vf.mean())
    se = math.sqrt(float(vr.var()) / len(vr) + float(vf.var()) / len(vf)) if min(len(vr), len(vf)) > 1 else math.nan
    return {"value": gap / lipschitz, "se": se / lipschitz, "lipschitz": lipschitz, "critic_gap": gap, "n": len(vr)}


def certified_w1_report(nets: Networks, real: Tensor, fake: Tensor, upper: dict[str, Any]) -> dict[str, Any] | None:
    """The certified W1 lower bound on the first W1_POINTS pairs, and on 2-D data the exact
    empirical W1 of the same samples beside it; None for a critic whose bound is not certified
    (or a conditional one: its gap bounds the classes' W1, not the joint one)."""
    if not upper["certified"] or nets.cfg.conditional:
        return None
    from ganctl.measure.quality import W1_POINTS, wasserstein1

    k = min(len(real), W1_POINTS)
    bound = w1_lower_bound(nets.critic, real[:k], fake[:k], upper["value"])
    if real.dim() == 2:
        bound["w1_exact"] = wasserstein1(fake[:k].float(), real[:k].float())
    return bound


def _by_class(nets: Networks, norms: dict[str, Tensor], y: Tensor, tol: float) -> dict[str, Any]:
    """Each class's statistics per point set (its points, and its fakes and interpolates)."""
    out = {}
    for k, name in enumerate(nets.class_names):
        mask = y == k
        if mask.any():
            out[name] = {s: summarise(v[mask], tol) for s, v in norms.items()}
    return out


def _alignment_summary(
    critic: nn.Module, real: Tensor, fake: Tensor, g: torch.Generator, y: Tensor | None = None
) -> dict[str, Any]:
    """`alignment` on the first ALIGNMENT_PAIRS points, paired by the optimal coupling (for a
    conditional critic, within each class: the real and fake of a pair share a label)."""
    k = min(len(real), ALIGNMENT_PAIRS)
    if y is None:
        cos = alignment(critic, real[:k], fake[:k][optimal_coupling(real[:k], fake[:k])], g)
    else:
        perm = torch.arange(k, device=fake.device)
        for label in y[:k].unique():
            idx = (y[:k] == label).nonzero().squeeze(1)
            perm[idx] = idx[optimal_coupling(real[idx], fake[idx])]
        cos = alignment(critic, real[:k], fake[perm], g, y[:k])
    q = torch.quantile(cos.double().cpu(), torch.tensor(QUANTILES, dtype=torch.float64))
    return {
        "pairs": k,
        "coupling": "optimal",
        "mean": float(cos.mean()),
        **{f"q{round(p * 100):02d}": float(v) for p, v in zip(QUANTILES, q)},
    }


def _upper_bound_report(
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


def trajectory(run: Path, measure: Measure = Measure(), device: str = "cpu") -> list[Report]:
    """`analyse` at every checkpoint of a run (a run folder, or one checkpoint file), in step
    order, on the same real points, latents and interpolation coefficients throughout. Each
    row keeps the upper bound's value, not its per-layer table."""
    from ganctl.nets.checkpoint import load
    from ganctl.runfolder import find_checkpoint, list_checkpoints

    run = Path(run)
    paths = list_checkpoints(run) if run.is_dir() else []
    if not paths:
        paths = [find_checkpoint(run)]  # a file, or a clear error for a folder with none
    rows, real = [], None
    m = measure
    for path in progress.counted(paths, f"checkpoints of {run}", len(paths), _one):
        nets = load(path, device=device)
        if real is None:
            real = real_points(nets, m.n, m.seed, m.data)
        report = analyse(nets, n=m.n, seed=m.seed, tol=m.tol, raw=m.raw, noise_std=m.noise_std, real=real).report
        report.upper_bound.pop("layers")
        report.checkpoint = str(path)
        rows.append(report)
    return rows


def histogram_bins(norms: Tensor, bins: int = 12) -> list[tuple[float, float, int]]:
    """(low edge, high edge, count) of `bins` equal bins from 0 to the largest norm."""
    x = norms.double().cpu()
    hi = max(float(x.max()), 1e-12)
    counts = torch.histc(x, bins=bins, min=0.0, max=hi)
    return [(hi * i / bins, hi * (i + 1) / bins, int(c)) for i, c in enumerate(counts)]


def draw_histograms(path: Path, norms: dict[str, Tensor], step: int) -> None:
    """The per-set norm histograms of one checkpoint, overlaid, as a PNG."""
    from ganctl.measure.render import histograms

    histograms(path, {k: v.cpu().numpy() for k, v in norms.items()}, f"||grad D||  step {step}")


def draw_trajectories(path: Path, runs: dict[str, list[Report]]) -> None:
    """The interpolate-norm quantiles of every run's checkpoints against step, as a PNG."""
    import numpy as np

    from ganctl.measure.render import quantile_trajectories

    series = {
        name: {
            "step": np.array([r.step for r in rows]),
            **{q: np.array([r.sets["interp"][q] for r in rows]) for q in ("q05", "q50", "q95")},
        }
        for name, rows in runs.items()
    }
    title = "||grad D(x_hat)|| at interpolates, by step: median (thick), q05 and q95 (thin)"
    quantile_trajectories(path, series, title)
