"""ganctl: train Wasserstein GANs and check whether the critic is really Lipschitz.

`import ganctl` stays light: torch is imported when a function that needs it is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["TrainConfig", "Trainer", "load", "resume", "train", "__version__"]

if TYPE_CHECKING:
    from ganctl.checkpoint import load
    from ganctl.config import TrainConfig
    from ganctl.engine import Trainer, resume
    from ganctl.training import train

_LAZY = {
    "TrainConfig": "ganctl.config",
    "Trainer": "ganctl.engine",
    "load": "ganctl.checkpoint",
    "resume": "ganctl.engine",
    "train": "ganctl.training",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ganctl' has no attribute {name!r}")
