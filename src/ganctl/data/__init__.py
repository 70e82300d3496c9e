"""Data sources behind one registry. Each source samples batches on the training device
from an explicit `torch.Generator`, so the data stream is part of the resumable state."""

from __future__ import annotations

from ganctl.data.toy import ToySet, available_datasets, get_dataset

__all__ = ["ToySet", "available_datasets", "get_dataset"]
