"""The cache folder and the files ganctl keeps in it: decoded image folders, real images'
features, `--classifier auto`'s networks and 2-D W1 floors. Each is an optimisation, keyed by
everything that made it: absent, damaged or stale, it is made again, and a folder that cannot
be written costs a recomputation, never a failed run.

The folder: ``$GANCTL_CACHE``, else ``$XDG_CACHE_HOME/ganctl``, else ``~/.cache/ganctl``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

# What is kept, as the start of its file name, and the file's format.
KINDS = {
    "images": ".safetensors",  # a folder's decoded pixels (`ganctl.data.images`)
    "features": ".safetensors",  # real images in a feature space (`ganctl.quality.scores`)
    "classifier": ".safetensors",  # `--classifier auto`'s network (`ganctl.quality.classifier`)
    "w1floor": ".json",  # a 2-D set's W1 floor (`ganctl.lipschitz.transport`)
}


def folder() -> Path:
    if os.environ.get("GANCTL_CACHE"):
        return Path(os.environ["GANCTL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ganctl"


def path(kind: str, key: str) -> Path:
    """The file of one `kind` of entry for `key` (everything that made it, as text)."""
    return folder() / f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:32]}{KINDS[kind]}"
