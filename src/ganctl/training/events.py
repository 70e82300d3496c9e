"""What a training run reports while it goes (events, each a record with a `Literal` kind) and
when it ends (its `Summary`). The loop emits them to a handler; the command line draws them,
a comparison's executors carry them across processes (they pickle) tagged with their job."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

JobState = Literal["done", "resume", "new"]  # a job: finished (skipped), resumed from its folder, or new
Kind = Literal["start", "step", "log", "warning", "checkpoint", "sample", "pruned", "end", "job"]


@dataclass(frozen=True)
class Event:
    """One thing a run reports; `job` is its place in a comparison's plan (None for a lone run)."""

    kind: ClassVar[Kind]
    job: int | None = field(default=None, kw_only=True)


@dataclass(frozen=True)
class Started(Event):
    kind: ClassVar[Literal["start"]] = "start"
    config: dict[str, Any]
    device: str
    step: int  # where it starts: 0, or the resumed step
    out: str
    exact_resume: bool
    world_size: int

    @property
    def steps(self) -> int:
        return int(self.config["steps"])


@dataclass(frozen=True)
class Stepped(Event):
    kind: ClassVar[Literal["step"]] = "step"
    step: int


@dataclass(frozen=True)
class Logged(Event):
    kind: ClassVar[Literal["log"]] = "log"
    record: dict[str, Any]  # the metrics.jsonl record: step, training scalars, eval/... values

    @property
    def step(self) -> int:
        return int(self.record["step"])


@dataclass(frozen=True)
class Warned(Event):
    kind: ClassVar[Literal["warning"]] = "warning"
    message: str


@dataclass(frozen=True)
class Saved(Event):
    kind: ClassVar[Literal["checkpoint"]] = "checkpoint"
    step: int
    path: str


@dataclass(frozen=True)
class Drew(Event):
    kind: ClassVar[Literal["sample"]] = "sample"
    step: int
    path: str


@dataclass(frozen=True)
class Pruned(Event):
    kind: ClassVar[Literal["pruned"]] = "pruned"
    path: str


@dataclass
class Summary:
    """A finished run: where its files are, how long it took, its final evaluation and config.
    `peak_memory_mb` and `resumed` are a comparison's (`ganctl.fleet.jobs.run_job`)."""

    run_dir: str
    checkpoint: str
    picture: str
    step: int
    steps_trained: int
    wall_s: float  # the whole run: set-up, training, the final evaluation and picture
    s_per_step: float | None  # training steps alone
    device: str
    exact_resume: bool
    world_size: int
    ranks_in_sync: bool
    restarts: int
    final: dict[str, Any]  # the final evaluation, and the training scalars since the last log
    image_metrics_on: dict[str, Any] | None
    config: dict[str, Any]
    peak_memory_mb: float | None = None
    resumed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Summary:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    @classmethod
    def read(cls, path: Path) -> Summary | None:
        """A run folder's summary.json, or None when there is none or it does not read."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None


@dataclass(frozen=True)
class Ended(Event):
    kind: ClassVar[Literal["end"]] = "end"
    summary: Summary


@dataclass(frozen=True)
class JobStarted(Event):
    """A job's announcement, before its run's own events: its place among `total`, what it
    trains, its folder and its state (`job`, as for every event, is its place in the plan)."""

    kind: ClassVar[Literal["job"]] = "job"
    index: int
    total: int
    method: str
    seed: int
    run_dir: str
    state: JobState
    trial: int | str | None = None

    @property
    def label(self) -> str:
        which = "" if self.trial is None else " (report)" if self.trial == "report" else f" trial {self.trial}"
        return f"{self.method}{which} seed {self.seed}"


EventHandler = Callable[[Event], None]
