"""ganctl: train Wasserstein GANs and check whether the critic is really Lipschitz.

Every command is one call here: `train` (and `resume`, `Trainer`), `sample`, `grad_norms` and
`grad_norm_trajectory` (gradnorm), `evaluate` (eval); `load` reads a checkpoint's networks.
`import ganctl` stays light: torch is imported when a function that needs it is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "TrainConfig",
    "Trainer",
    "evaluate",
    "grad_norm_trajectory",
    "grad_norms",
    "load",
    "resume",
    "sample",
    "train",
    "__version__",
]

if TYPE_CHECKING:
    from ganctl.config import TrainConfig
    from ganctl.lipschitz.analysis import grad_norm_trajectory, grad_norms
    from ganctl.nets.checkpoint import load
    from ganctl.nets.sampling import sample
    from ganctl.quality.evaluate import evaluate
    from ganctl.training.engine import Trainer
    from ganctl.training.loop import train
    from ganctl.training.state import resume

_LAZY = {
    "TrainConfig": "ganctl.config",
    "evaluate": "ganctl.quality.evaluate",
    "grad_norm_trajectory": "ganctl.lipschitz.analysis",
    "grad_norms": "ganctl.lipschitz.analysis",
    "sample": "ganctl.nets.sampling",
    "Trainer": "ganctl.training.engine",
    "load": "ganctl.nets.checkpoint",
    "resume": "ganctl.training.state",
    "train": "ganctl.training.loop",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ganctl' has no attribute {name!r}")
