"""The data's own quality metrics, where the data knows its modes.

- High-quality share: samples within 3 std of their nearest mixture centre (VEEGAN,
  Srivastava et al. 2017; PacGAN, Lin et al. 2018).
- Modes covered (`modes`): a mode counts when at least a fifth of the samples it would receive
  under the real distribution (n / K) are high-quality samples on it, PacGAN's rule (20 of the
  100 expected per mode on the 25-mode grid with 2,500 samples).
- Modes hit (`modes_hit`): a mode counts when any high-quality sample lands on it. This lenient
  count is far higher early in training (the WGAN-GP toy recipe: 22 hit, 2 covered, measured).
- Class consistency, for a conditional generator: the share of samples of the class they were
  drawn for (on a mixture, or through the `shapes` judge).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ganctl.data import DataSource


def mixture_quality(
    samples: Tensor, centres: Tensor, std: float, n_sigma: float = 3.0, min_share: float = 0.2
) -> dict[str, float]:
    """Modes covered and high-quality share of `samples` (N, 2) for a mixture whose
    components have centres (K, 2) and isotropic std `std`."""
    samples = samples.detach().float().cpu()
    centres = centres.detach().float().cpu()
    dist = torch.cdist(samples, centres)  # (N, K)
    nearest_dist, nearest = dist.min(dim=1)
    good = nearest_dist <= n_sigma * std
    counts = torch.bincount(nearest[good], minlength=len(centres))
    expected = len(samples) / len(centres)
    covered = int((counts >= max(1.0, min_share * expected)).sum())
    return {
        "modes": covered,
        "modes_hit": int((counts > 0).sum()),
        "modes_total": len(centres),
        "hq_share": float(good.float().mean()),
    }


def class_consistency(dataset: DataSource, fake: Tensor, labels: Tensor) -> dict[str, float]:
    """The share of samples generated for class k that are of class k: on a 2-D mixture, a
    high-quality sample (within 3 std) whose nearest mode is k; on `shapes`, an image the judge
    assigns to mode k. Empty where the data has no way to tell."""
    labels = labels.to(fake.device)
    if dataset.mixture is not None:
        centres = dataset.mixture.centres_tensor(fake.device)
        dist, nearest = torch.cdist(fake.float(), centres).min(dim=1)
        on_mode = (nearest == labels) & (dist <= 3.0 * dataset.mixture.std)
        return {"class_consistency": float(on_mode.float().mean())}
    if dataset.judge is not None:
        return {"class_consistency": float((dataset.judge(fake).to(labels.device) == labels).float().mean())}
    return {}
