"""How Lipschitz a critic really is: the distribution of ||grad_x D(x)|| on point sets, an
empirical lower bound, a layer-wise upper bound, and transport alignment.

Every gradient comes from `ganctl.penalties.input_grads`, the function training penalises,
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

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ganctl import penalties, streams
from ganctl.analysis.defaults import GRADNORM_N as DEFAULT_N
from ganctl.analysis.defaults import TOL as DEFAULT_TOL
from ganctl.analysis.defaults import TRAJECTORY_N
from ganctl.networks import Networks, eval_mode

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
VANISHING = 1e-3
POWER_ITERATIONS = 50
BATCH_VALUES = 1 << 22
ALIGNMENT_PAIRS = 512  # the exact coupling is O(n^3): 512 pairs take about 0.6 s on a CPU


def gradient_norms(critic: nn.Module, x: Tensor, batch: int | None = None) -> tuple[Tensor, Tensor]:
    """(D(x), ||grad D(x)||) per sample, in eval mode, in batches of `batch` (by default 4096
    points, fewer for images: about 4 million input values a batch)."""
    if batch is None:
        batch = min(4096, max(1, BATCH_VALUES // max(1, x[0].numel())))
    values, norms = [], []
    with eval_mode(critic):
        for chunk in x.split(batch):
            out, grads = penalties.input_grads(critic, chunk)
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
    from ganctl.analysis.quality import linear_assignment

    cost = torch.cdist(real.flatten(1).double().cpu(), fake.flatten(1).double().cpu())
    return torch.from_numpy(linear_assignment(cost.numpy())).to(fake.device)


def alignment(critic: nn.Module, real: Tensor, fake: Tensor, generator: torch.Generator) -> Tensor:
    """cos(grad D(x_hat), x_real - x_fake) at x_hat = e x_real + (1 - e) x_fake for the given
    pairs. Pairs drawn from the optimal coupling (see `optimal_coupling`) give 1 for the
    optimal critic, whose gradient points along the transport direction (Gulrajani et al.
    2017, Proposition 1); independently drawn pairs do not, even then."""
    x_hat = penalties.interpolate(real, fake, generator)
    with eval_mode(critic):
        _, grads = penalties.input_grads(critic, x_hat)
    g, d = grads.flatten(1), (real - fake).flatten(1)
    return torch.nn.functional.cosine_similarity(g, d, dim=1, eps=1e-12).detach()


@torch.no_grad()
def empirical_lower_bound(critic: nn.Module, x: Tensor, y: Tensor) -> float:
    """max |D(x_i) - D(y_i)| / ||x_i - y_i|| over the given pairs: a lower bound on the
    critic's Lipschitz constant (any pair is a witness)."""
    with eval_mode(critic):
        dx = torch.linalg.vector_norm((x - y).flatten(1), dim=1)
        dd = (critic(x) - critic(y)).reshape(-1).abs()
    keep = dx > 1e-12
    return float((dd[keep] / dx[keep]).max()) if keep.any() else 0.0


# --- the layer-wise upper bound ------------------------------------------------------------
@dataclass
class LayerBound:
    name: str
    kind: str
    bound: float  # inf where no finite constant exists
    how: str


def operator_norm(
    fn: Callable[[Tensor], Tensor],
    shape: tuple[int, ...],
    iterations: int = POWER_ITERATIONS,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> float:
    """The operator norm of the affine map `fn` (bias removed: fn(x) - fn(0)) on inputs of
    `shape` (batch of one), by power iteration on A^T A."""
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


def _layer_bound(name: str, module: nn.Module, in_shape: tuple[int, ...], device: torch.device) -> LayerBound:
    kind = type(module).__name__
    if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d)):
        how = "power iteration on the layer's map" + (
            " (spectral-normalised weight)" if hasattr(module, "parametrizations") else ""
        )
        return LayerBound(name, kind, operator_norm(module, in_shape, device=device), how)
    if isinstance(module, (nn.AvgPool2d, nn.Upsample)):
        return LayerBound(
            name, kind, operator_norm(module, in_shape, device=device), "power iteration on the layer's map"
        )
    if isinstance(module, nn.LeakyReLU):
        return LayerBound(name, kind, max(1.0, abs(module.negative_slope)), "max(1, |slope|)")
    if isinstance(module, _UNIT) or kind in ("Flatten", "Unflatten"):
        return LayerBound(name, kind, 1.0, "1-Lipschitz")
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        scale = (module.weight if module.affine else torch.ones_like(module.running_var)).abs()
        return LayerBound(
            name,
            kind,
            float((scale / torch.sqrt(module.running_var + module.eps)).max()),
            "max |gamma| / sqrt(running var + eps) (eval mode)",
        )
    if isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
        return LayerBound(name, kind, math.inf, "no global Lipschitz constant (normalisation by the input's own scale)")
    return LayerBound(name, kind, math.inf, "unknown layer: no bound")


def upper_bound(
    critic: nn.Module, sample_shape: tuple[int, ...], device: torch.device | str = "cpu"
) -> tuple[float, list[LayerBound]]:
    """The product of per-layer constants along the critic (branches of a residual block
    add), and the per-layer table."""
    device = torch.device(device)
    shapes: dict[nn.Module, tuple[int, ...]] = {}

    def record(mod: nn.Module, args: tuple) -> None:  # a pre-hook must return None
        if args and torch.is_tensor(args[0]):
            shapes.setdefault(mod, tuple(args[0].shape[1:]))

    hooks = [m.register_forward_pre_hook(record) for m in critic.modules()]
    with eval_mode(critic):
        try:
            with torch.no_grad():
                critic(torch.zeros((1, *sample_shape), device=device))
        finally:
            for h in hooks:
                h.remove()
        table: list[LayerBound] = []
        total = _bound(critic, "", shapes, table, device)
    return total, table


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
    # A parametrized (spectral-norm) layer has children (its parametrizations) but is one layer.
    return hasattr(module, "parametrizations") or isinstance(module, (nn.Linear, nn.Conv2d))


# --- the whole report -------------------------------------------------------------------
def verdict(interp: dict[str, float], tol: float) -> tuple[str, str]:
    """One word and a sentence for the interpolate norms."""
    if interp["vanishing"] > 0.5 or interp["q50"] < 1e-2:
        return "vanishing", f"median norm {interp['q50']:.3g}: the critic is nearly flat where the penalty looks"
    if interp["q50"] > 10.0:
        return "exploding", f"median norm {interp['q50']:.3g}: far above 1"
    if interp["above"] > 0.05:
        return "violating", f"{interp['above']:.1%} of interpolates have norm above 1 + {tol}"
    if interp["below"] > 0.5:
        return (
            "under-using",
            f"{interp['below']:.1%} of interpolates have norm below 1 - {tol}: Lipschitz but far from the optimal "
            f"critic's unit norm",
        )
    return "within tolerance", f"{1 - interp['above'] - interp['below']:.1%} of interpolates within 1 +/- {tol}"


def real_points(nets: Networks, n: int, seed: int = 0, data: str | None = None) -> Tensor:
    """n real points on the networks' device, from a stream seeded by `seed`: from the
    checkpoint's own data, or from `data` (any `--data` value) when given, which must have the
    critic's input shape."""
    import dataclasses

    from ganctl.data import load_dataset, sample_shape
    from ganctl.errors import DataError

    g = torch.Generator(device=nets.device)
    g.manual_seed(seed)
    if data is None:
        return nets.dataset.sample(n, g, nets.device)
    points = load_dataset(dataclasses.replace(nets.cfg, data=data)).sample(n, g, nets.device)
    expected = sample_shape(nets.cfg)
    if tuple(points.shape[1:]) != expected:
        raise DataError(
            f"--data {data}: its points have shape {tuple(points.shape[1:])}, but this critic takes {expected}"
            f" (the checkpoint was trained on {nets.cfg.data})"
        )
    return points


def analyse(
    nets: Networks,
    n: int = DEFAULT_N,
    seed: int = 0,
    tol: float = DEFAULT_TOL,
    raw: bool = False,
    noise_std: float | None = None,
    real: Tensor | None = None,
    bounds: bool = True,
) -> dict[str, Any]:
    """The full report for a checkpoint's networks (`ganctl.load`) or a trainer: per point set
    statistics, bounds, alignment, verdict, and the time it took."""
    started = time.perf_counter()
    device = nets.device
    if real is None:
        real = real_points(nets, n, seed)
    real = real[:n].to(device)
    g = torch.Generator(device=device)  # latents, interpolation and noise: a stream apart from
    g.manual_seed(seed + streams.ANALYSIS_FAKE)  # the real points', so passing `real` in changes nothing else
    n = len(real)
    fake = nets.sample(n, g, raw=raw)
    x_hat = penalties.interpolate(real, fake, g)
    sets = {"real": real, "fake": fake, "interp": x_hat}
    if noise_std:
        sets["real+noise"] = real + noise_std * torch.randn(real.shape, generator=g, device=device)
    report: dict[str, Any] = {
        "n": n,
        "seed": seed,
        "tol": tol,
        "generator": "raw" if raw or nets.ema is None else "ema",
        "step": nets.step,
        "sets": {},
    }
    largest = 0.0
    norms_by_set, values_by_set = {}, {}
    for name, x in sets.items():
        values_by_set[name], norms = gradient_norms(nets.critic, x)
        norms_by_set[name] = norms
        report["sets"][name] = summarise(norms, tol)
        largest = max(largest, float(norms.max()))
    # The critic's estimate of W1 on these points (exact for the optimal 1-Lipschitz critic).
    report["wasserstein"] = float(values_by_set["real"].double().mean() - values_by_set["fake"].double().mean())
    k = min(n, ALIGNMENT_PAIRS)
    cos = alignment(nets.critic, real[:k], fake[:k][optimal_coupling(real[:k], fake[:k])], g)
    report["alignment"] = {
        "pairs": k,
        "coupling": "optimal",
        "mean": float(cos.mean()),
        **{
            f"q{round(p * 100):02d}": float(v)
            for p, v in zip(QUANTILES, torch.quantile(cos.double().cpu(), torch.tensor(QUANTILES, dtype=torch.float64)))
        },
    }
    pair_bound = empirical_lower_bound(nets.critic, real, fake)
    lower = {"pairs": pair_bound, "max_grad_norm": largest, "value": max(pair_bound, largest)}
    report["lower_bound"] = lower
    if bounds:
        total, table = upper_bound(nets.critic, tuple(real.shape[1:]), device)
        report["upper_bound"] = {
            "value": total if math.isfinite(total) else None,
            "method": "product of per-layer operator norms; convolutions by power iteration on the layer's map",
            "layers": [vars(e) | {"bound": e.bound if math.isfinite(e.bound) else None} for e in table],
        }
    word, why = verdict(report["sets"]["interp"], tol)
    report["verdict"] = {"status": word, "detail": why}
    report["seconds"] = round(time.perf_counter() - started, 3)
    report["_norms"] = norms_by_set  # tensors for histograms; dropped from JSON
    return report


def trajectory(
    run: Path,
    n: int = TRAJECTORY_N,
    seed: int = 0,
    tol: float = DEFAULT_TOL,
    raw: bool = False,
    device: str = "cpu",
    data: str | None = None,
    noise_std: float | None = None,
) -> list[dict[str, Any]]:
    """`analyse` at every checkpoint of a run (a run folder, or one checkpoint file), in step
    order, on the same real points, latents and interpolation coefficients throughout. Each
    row keeps the upper bound's value, not its per-layer table."""
    from ganctl.checkpoint import load
    from ganctl.runfolder import find_checkpoint, list_checkpoints

    run = Path(run)
    paths = list_checkpoints(run) if run.is_dir() else []
    if not paths:
        paths = [find_checkpoint(run)]  # a file, or a clear error for a folder with none
    rows, real = [], None
    for path in paths:
        nets = load(path, device=device)
        if real is None:
            real = real_points(nets, n, seed, data)
        report = analyse(nets, n=n, seed=seed, tol=tol, raw=raw, noise_std=noise_std, real=real)
        report.pop("_norms")
        report["upper_bound"].pop("layers")
        report["checkpoint"] = str(path)
        rows.append(report)
    return rows
