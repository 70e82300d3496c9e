"""A run on disk: the one module that knows the run folder's layout.

    RUN/config.json          the resolved config
    RUN/metrics.jsonl        one JSON object per logged or evaluated step
    RUN/summary.json         the run's summary, written by `compare` when it finishes a run
    RUN/checkpoints/         step-NNNNNNN.safetensors
    RUN/samples/             step-NNNNNNN.png and final.png
    RUN/tensorboard/         TensorBoard events, with --tensorboard

Everything here is paths and JSON: no torch.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ganctl.errors import CheckpointError, ConfigError
from ganctl.fileio import write_text_atomic

CHECKPOINT_SUFFIX = ".safetensors"
_CHECKPOINT_NAME = re.compile(r"step-(\d+)\.safetensors$")


class MetricsLog:
    """Append-only JSONL. On resume, records past the resumed step are dropped, so the log
    reads as one uninterrupted run; a fresh run starts an empty log."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        if resume_step is not None and path.exists():
            kept = [line for line in path.read_text(encoding="utf-8").splitlines() if _step_of(line) <= resume_step]
            write_text_atomic(path, "".join(line + "\n" for line in kept))
        elif resume_step is None:
            path.write_text("", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return 0


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    @property
    def samples(self) -> Path:
        return self.path / "samples"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    def checkpoint_path(self, step: int) -> Path:
        return self.path / "checkpoints" / f"step-{step:07d}{CHECKPOINT_SUFFIX}"

    def sample_path(self, step: int | None) -> Path:
        """The picture at `step`, or the final one (None)."""
        return self.samples / ("final.png" if step is None else f"step-{step:07d}.png")

    def checkpoints(self) -> list[Path]:
        """The run's checkpoints in step order."""
        found = [
            (int(m.group(1)), p)
            for p in (self.path / "checkpoints").glob(f"step-*{CHECKPOINT_SUFFIX}")
            if (m := _CHECKPOINT_NAME.search(p.name))
        ]
        return [p for _, p in sorted(found)]

    def prepare(self, resuming: bool, overwrite: bool) -> None:
        """Create the folder, refuse to train over an earlier run's checkpoints, and check it
        is writable before any work starts. With `overwrite`, a fresh run first removes the
        earlier run's checkpoints and log."""
        out = self.path
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out}: exists and is not a folder")
        if not resuming and self.checkpoints() and not overwrite:
            raise ConfigError(
                f"--out {out}: already holds a run's checkpoints; resume it with --resume {out},"
                " choose another --out, or pass --overwrite to start over"
            )
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / ".ganctl-write-test"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
        if overwrite and not resuming:
            for path in self.checkpoints():
                path.unlink()
            self.metrics_path.unlink(missing_ok=True)
        self.samples.mkdir(exist_ok=True)

    def write_config(self, values: dict[str, Any]) -> None:
        write_text_atomic(self.config_path, json.dumps(values, indent=2, sort_keys=True) + "\n")

    def metrics_log(self, resume_step: int | None) -> MetricsLog:
        return MetricsLog(self.metrics_path, resume_step)

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every record of the log; a line cut short by a kill is skipped, the rest counts."""
        if not self.metrics_path.is_file():
            return []
        records = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_text_atomic(self.summary_path, json.dumps(summary, indent=2, sort_keys=True) + "\n")

    def read_summary(self) -> dict[str, Any] | None:
        if not self.summary_path.is_file():
            return None
        try:
            return json.loads(self.summary_path.read_text(encoding="utf-8"))
        except ValueError:
            return None


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """A run folder's checkpoints in step order."""
    return RunFolder(run_dir).checkpoints()


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint file as given, or the latest checkpoint of a run folder."""
    path = Path(path)
    if path.is_dir():
        found = list_checkpoints(path)
        if not found:
            raise CheckpointError(
                f"{path}: a folder with no checkpoints (expected checkpoints/step-*{CHECKPOINT_SUFFIX})"
            )
        return found[-1]
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file or run directory")
    return path


def run_dir_of(path: str | Path) -> Path:
    """The run folder a checkpoint file belongs to (RUN/checkpoints/step-N.safetensors)."""
    path = Path(path)
    if path.is_dir():
        return path
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent
