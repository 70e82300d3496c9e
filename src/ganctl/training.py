"""The training loop: a `Trainer` stepped to `steps`, with its run folder written along the
way (`ganctl.runfolder`), evaluated (`ganctl.evaluation`) and checkpointed. Progress goes to
`on_event(kind, payload)`; nothing here prints.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ganctl import checkpoint, distributed, interrupts
from ganctl.config import ResolvedConfig, TrainConfig
from ganctl.engine import Trainer
from ganctl.engine import resume as resume_trainer
from ganctl.errors import CheckpointError, ConfigError, Interrupted, NonFinite, TrainingFailed, WriteError
from ganctl.evaluation import Evaluator
from ganctl.recipes import resolve
from ganctl.runfolder import MetricsLog, RunFolder, RunLock
from ganctl.tensorboard import TensorBoardLog

MAX_ROLLBACKS = 3  # --on-nonfinite rollback: reloads per run before giving up
EventHandler = Callable[[str, dict[str, Any]], None]


class RunLog:
    """Where a run's records go: metrics.jsonl (the source of truth) and, with --tensorboard,
    TensorBoard events under RUN/tensorboard (scalars, sample pictures, gradient-norm
    histograms)."""

    def __init__(self, folder: RunFolder, cfg: TrainConfig, resume_step: int | None):
        self.tensorboard = TensorBoardLog(folder.tensorboard) if cfg.tensorboard else None  # fails before any write
        self.metrics: MetricsLog = folder.metrics_log(resume_step)

    def write(self, record: dict[str, Any]) -> None:
        self.metrics.write(record)
        if self.tensorboard is not None:
            self.tensorboard.scalars(record)

    def picture(self, name: str, image: Any, step: int) -> None:
        if self.tensorboard is not None:
            self.tensorboard.picture(name, image, step)

    def histogram(self, name: str, values: Any, step: int) -> None:
        if self.tensorboard is not None and values is not None:
            self.tensorboard.histogram(name, values, step)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


def _due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def train(
    config: TrainConfig | None = None,
    out: str | Path = "runs/latest",
    *,
    resume: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    overwrite: bool = False,
    on_event: EventHandler | None = None,
) -> dict[str, Any]:
    """Train from `config` (or continue the checkpoint `resume`, with schedule `overrides`)
    into the run directory `out`; return a summary of the run.

    Under torchrun (WORLD_SIZE > 1) every rank trains its replica on its own data (see
    `ganctl.distributed`); rank 0 alone evaluates, draws, logs and writes checkpoints.

    The writer holds `out`'s lock (`ganctl.runfolder.RunLock`) from before it writes anything
    until it is done: a second writer into the same folder fails at once."""
    out = Path(out)
    overrides = overrides or {}
    writes = int(os.environ.get("RANK", "0")) == 0  # rank 0 of a torchrun group, or the only process
    with RunLock(out) if writes else contextlib.nullcontext() as lock:
        if lock is not None and lock.note and on_event is not None:
            on_event("warning", {"message": lock.note})
        # The settings before the run is built: the resumed checkpoint's (read once, header only).
        settings = checkpoint.peek_newest(resume)[1] if resume is not None else config or TrainConfig()
        spec = overrides.get("device") or (config.device if config is not None else None) or "auto"
        if resume is not None and spec == "auto":
            spec = settings.device
        with _threads(overrides.get("threads", settings.threads)), _process_group(spec):
            return _train(config, out, resume, overrides, overwrite, on_event)


@contextlib.contextmanager
def _threads(threads: int) -> Iterator[None]:
    """The run's CPU thread count (--threads; 0: torch's own, which measured faster than one
    thread even for the 2-D MLP on 2 cores, docs/benchmarks.md), restored afterwards: the run
    owns the process while it lasts. Runs side by side want one thread each."""
    import torch

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _process_group(spec: str) -> Iterator[None]:
    """Under torchrun, the process group on the run's device (`spec`): started here unless the
    caller already runs one, and then shut down after the run."""
    started = distributed.requested() and not distributed.current().active
    if distributed.requested():
        from ganctl.devices import resolve_device

        distributed.init(resolve_device(spec))
    try:
        yield
    finally:
        if started:
            distributed.shutdown()


def _train(
    config: TrainConfig | None,
    out: Path,
    resume: str | Path | None,
    overrides: dict[str, Any],
    overwrite: bool,
    on_event: EventHandler | None,
) -> dict[str, Any]:
    world = distributed.current()
    emit = (on_event if world.main else None) or (lambda kind, payload: None)
    if resume is not None:
        trainer = resume_trainer(Path(resume), overrides=overrides)
    else:  # a comparison's job arrives resolved; anything else is resolved here, once
        config = config or TrainConfig()
        trainer = Trainer(config if isinstance(config, ResolvedConfig) else resolve(config))
    cfg = trainer.cfg
    main = world.main
    folder = RunFolder(out)
    log: RunLog | None = None
    failure: Exception | None = None
    if main:
        try:
            folder.prepare(resuming=resume is not None, overwrite=overwrite)
            folder.write_config(cfg.to_dict())
            log = RunLog(folder, cfg, trainer.step if resume is not None else None)
            evaluator = Evaluator(trainer)
            for skipped in trainer.dataset.skipped:
                emit("warning", {"message": f"skipped an unreadable image: {skipped}"})
        except Exception as exc:  # noqa: BLE001 - re-raised below, after telling the other ranks
            failure = exc
    if not distributed.all_ok(failure is None, world):
        if failure is not None:
            raise failure
        raise ConfigError(f"rank {world.rank}: rank 0 could not set up the run (its message says why)")
    first_step = trainer.step
    for note in trainer.notes:
        emit("warning", {"message": note})
    emit(
        "start",
        {
            "config": cfg.to_dict(),
            "device": str(trainer.device),
            "step": first_step,
            "out": str(out),
            "exact_resume": trainer.exact_resume,
            "world_size": world.size,
        },
    )

    def save_checkpoint(step: int) -> Path | None:  # a collective: every rank's stream is kept
        states = distributed.gather_states(trainer.rng.get_state(), world, trainer.device)
        if not main:
            return None
        path = checkpoint.save(trainer, folder.checkpoint_path(step), states if world.active else None)
        for removed in folder.prune(cfg.keep_last, readable=checkpoint.peek):
            emit("pruned", {"path": str(removed)})
        return path

    try:
        with interrupts.guard() as stop:
            return _loop(
                trainer,
                folder,
                world,
                main,
                emit,
                save_checkpoint,
                stop,
                first_step,
                log if main else None,
                evaluator if main else None,
            )
    except WriteError as exc:  # a full disk: say which checkpoint is whole and how to go on from it
        exc.resumable = True
        try:
            exc.last_good = str(checkpoint.peek_newest(folder.path)[0])
        except CheckpointError:  # none written yet, or none whole
            exc.last_good = None
        raise
    finally:
        if log is not None:
            log.close()


def _loop(
    trainer: Trainer,
    folder: RunFolder,
    world: Any,
    main: bool,
    emit: EventHandler,
    save_checkpoint: Callable[[int], Path | None],
    stop: interrupts.Guard,
    first_step: int,
    log: RunLog | None,
    evaluator: Evaluator | None,
) -> dict[str, Any]:
    cfg = trainer.cfg
    started = time.perf_counter()
    last_ckpt, saved_at = None, None
    found = folder.checkpoints()  # (rollback under torchrun needs a shared filesystem)
    last_good: Path | None = found[-1] if found else None  # a resumed run's own checkpoints count
    last_stats: dict[str, Any] = {}
    rollbacks = 0
    while trainer.step < cfg.steps:
        try:
            trainer.train_step()
        except NonFinite as exc:
            if cfg.on_nonfinite != "rollback" or last_good is None or rollbacks >= MAX_ROLLBACKS:
                why = (
                    ""
                    if cfg.on_nonfinite != "rollback"
                    else (
                        "; no checkpoint to roll back to"
                        if last_good is None
                        else f"; rolled back {rollbacks} times already"
                    )
                )
                raise TrainingFailed(
                    f"{exc}{why}; last good checkpoint: {last_good or 'none'}"
                    " (--on-nonfinite skip drops such updates, rollback reloads the last checkpoint)"
                ) from None
            rollbacks += 1
            trainer.roll_back(checkpoint.read_state(last_good)[0], rollbacks)
            message = f"{exc}; rolled back to {last_good} with a fresh random stream ({rollbacks}/{MAX_ROLLBACKS})"
            emit("warning", {"message": message})
            continue
        step = trainer.step
        # A signal ends the run after this step, with a checkpoint (every rank must agree).
        if not distributed.all_ok(stop.signum is None, world):
            path = save_checkpoint(step) if saved_at != step else last_ckpt
            if path is not None:
                last_good = path
            signum = stop.signum or 15
            raise Interrupted(
                f"interrupted by {stop.name or 'a signal on another rank'} at step {step}; checkpoint {path};"
                f" continue with: ganctl train --resume {path}",
                signum,
            )
        if _due(step, cfg.ckpt_every):
            last_ckpt, saved_at = save_checkpoint(step), step
            last_good = folder.checkpoint_path(step)
            if main:
                emit("checkpoint", {"step": step, "path": str(last_ckpt)})
        if not main:
            continue
        record = {"step": step}
        if _due(step, cfg.log_every):
            last_stats = trainer.pop_stats()
            record.update(last_stats)
            record["elapsed_s"] = round(time.perf_counter() - started, 3)
        if _due(step, cfg.eval_every):
            record.update({f"eval/{k}": v for k, v in evaluator.evaluate().items()})
            log.histogram("gradnorm/interp", evaluator.last_norms, step)
        if len(record) > 1:
            log.write(record)
            emit("log", record)
        if _due(step, cfg.sample_every):
            picture = folder.sample_path(step)
            log.picture("samples", evaluator.draw(picture, f"{cfg.data}  {cfg.lipschitz}  step {step}"), step)
            emit("sample", {"step": step, "path": str(picture)})
        emit("step", {"step": step})
    wall = time.perf_counter() - started

    if saved_at != trainer.step:
        last_ckpt = save_checkpoint(trainer.step)
    in_sync = distributed.in_sync([trainer.generator, trainer.critic], world)
    if not main:
        return {"rank": world.rank, "in_sync": in_sync}
    final = evaluator.evaluate()
    stats = {**last_stats, **trainer.pop_stats()}  # steps since the last log, over that log
    picture = folder.sample_path(None)
    evaluator.draw(picture, f"{cfg.data}  {cfg.lipschitz}  step {trainer.step} (final)")
    trained = trainer.step - first_step
    summary = {
        "run_dir": str(folder.path),
        "checkpoint": str(last_ckpt),
        "picture": str(picture),
        "step": trainer.step,
        "steps_trained": trained,
        "wall_s": round(wall, 3),
        "s_per_step": round(wall / trained, 6) if trained else None,
        "device": str(trainer.device),
        "exact_resume": trainer.exact_resume,
        "world_size": world.size,
        "ranks_in_sync": in_sync,
        "final": {**stats, **final},
        "image_metrics_on": evaluator.measured_on(),
        "config": cfg.to_dict(),
    }
    emit("end", summary)
    return summary
