"""TensorBoard events beside `metrics.jsonl`, with the `tensorboard` extra installed
(``pip install 'ganctl[tensorboard]'``). `metrics.jsonl` stays the source of truth: every scalar
written here is there too; the pictures and histograms are TensorBoard's only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ganctl.errors import ConfigError


def tag(name: str) -> str:
    """A TensorBoard tag for a metric name: eval/fid[random-conv] -> eval/fid/random-conv
    (TensorBoard would turn the brackets into underscores)."""
    return name.replace("[", "/").replace("]", "")


class TensorBoardLog:
    def __init__(self, folder: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "--tensorboard needs the tensorboard package: pip install 'ganctl[tensorboard]'"
            ) from None
        self.writer = SummaryWriter(log_dir=str(folder))

    def scalars(self, record: dict[str, Any]) -> None:
        step = record["step"]
        for name, value in record.items():
            if name != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(tag(name), value, step)

    def picture(self, name: str, image: Any, step: int) -> None:
        """A PIL image."""
        self.writer.add_image(name, np.asarray(image.convert("RGB")), step, dataformats="HWC")

    def histogram(self, name: str, values: Any, step: int) -> None:
        self.writer.add_histogram(name, values.detach().cpu().numpy(), step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
