"""The training loop: a `Trainer` stepped to `steps`, with its run folder written along the
way (`ganctl.runfolder`), evaluated (`ganctl.training.evaluator`) and checkpointed. Progress goes to
`on_event(kind, payload)`; nothing here prints.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ganctl import interrupts
from ganctl.config import SCHEDULE_FIELDS, ResolvedConfig, TrainConfig
from ganctl.devices import resolve_device, threads
from ganctl.errors import (
    CheckpointError,
    ConfigError,
    Interrupted,
    NonFinite,
    RankFailed,
    TrainingFailed,
    WriteError,
)
from ganctl.fileio import write_text_atomic
from ganctl.methods.resolve import resolve
from ganctl.nets import checkpoint
from ganctl.runfolder import MetricsLog, RunFolder, RunLock, newest_readable
from ganctl.training import distributed
from ganctl.training.engine import Trainer
from ganctl.training.evaluator import Evaluator
from ganctl.training.events import (
    Drew,
    Ended,
    EventHandler,
    Logged,
    Pruned,
    Saved,
    Started,
    Stepped,
    Summary,
    Warned,
)
from ganctl.training.state import capture, roll_back, skipped_notes
from ganctl.training.state import resume as resume_trainer
from ganctl.training.tensorboard import TensorBoardLog

MAX_ROLLBACKS = 3  # --on-nonfinite rollback: reloads per run before giving up


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
) -> Summary | None:
    """Train from `config` (or continue the checkpoint `resume`, with schedule `overrides`)
    into the run directory `out`; return a summary of the run (None on a torchrun rank other
    than 0, which reports nothing).

    Under torchrun (WORLD_SIZE > 1) every rank trains its replica on its own data (see
    `ganctl.training.distributed`); rank 0 alone evaluates, draws, logs and writes checkpoints.

    The writer holds `out`'s lock (`ganctl.runfolder.RunLock`) from before it writes anything
    until it is done: a second writer into the same folder fails at once."""
    out = Path(out)
    overrides = overrides or {}
    writes = int(os.environ.get("RANK", "0")) == 0  # rank 0 of a torchrun group, or the only process
    with RunLock(out) if writes else contextlib.nullcontext() as lock:
        if lock is not None and lock.note and on_event is not None:
            on_event(Warned(lock.note))
        restarted = restart_checkpoint(out)
        if restarted is not None:  # torchrun restarted the group: every rank resumes, as --resume does
            if config is not None:
                overrides = {k: getattr(config, k) for k in SCHEDULE_FIELDS if getattr(config, k) is not None}
            config, resume = None, restarted
        # The settings before the run is built: the resumed checkpoint's (its header only). A run
        # folder's newest readable checkpoint is found once, here; every later read takes that file.
        skipped: list[str] = []
        if resume is not None:
            resume, (settings, _), skipped = newest_readable(resume, checkpoint.peek)
        else:
            settings = config or TrainConfig()
        spec = overrides.get("device") or (config.device if config is not None else None) or "auto"
        if resume is not None and spec == "auto":
            spec = settings.device
        timeout = overrides.get("dist_timeout", settings.dist_timeout)
        with threads(overrides.get("threads", settings.threads)), _process_group(spec, timeout):
            try:
                return _train(config, out, resume, overrides, overwrite, on_event, skipped)
            except distributed.PeerLost as exc:  # before the loop: while the replicas were set up
                raise RankFailed(
                    f"rank {exc.rank}: a peer process failed while the run started ({exc.detail})"
                ) from None


def restart_checkpoint(out: Path) -> Path | None:
    """Under a torchrun restart (`--max-restarts`), the run folder to resume from: `out`, when
    this same torchrun job (its run id) wrote it and left a checkpoint; None otherwise (a first
    attempt, a folder of some other job, or no checkpoint yet: then the run starts afresh)."""
    if distributed.restart_count() == 0 or distributed.run_id() is None:
        return None
    folder = RunFolder(out)
    return out if folder.written_by() == distributed.run_id() and folder.checkpoints() else None


@contextlib.contextmanager
def _process_group(spec: str, timeout: float) -> Iterator[None]:
    """Under torchrun, the process group on the run's device (`spec`), its collectives under
    `timeout` seconds: started here unless the caller already runs one, then shut down after
    the run (not after a lost peer: a collective would fail again)."""
    started = distributed.requested() and not distributed.current().active
    if distributed.requested():
        distributed.init(resolve_device(spec), timeout)
    try:
        yield
    except RankFailed:
        raise
    except BaseException:
        if started:
            with contextlib.suppress(distributed.PeerLost):  # the error in hand is the one to report
                distributed.shutdown()
        raise
    if started:
        distributed.shutdown()


def _train(
    config: TrainConfig | None,
    out: Path,
    resume: str | Path | None,
    overrides: dict[str, Any],
    overwrite: bool,
    on_event: EventHandler | None,
    skipped: list[str],
) -> Summary | None:
    begun = time.perf_counter()
    world = distributed.current()
    emit = (on_event if world.main else None) or (lambda event: None)
    if resume is not None:
        trainer = resume_trainer(Path(resume), overrides=overrides)
        trainer.notes += skipped_notes(skipped, resume)
    else:  # a comparison's job arrives resolved; anything else is resolved here, once
        config = config or TrainConfig()
        trainer = Trainer(config if isinstance(config, ResolvedConfig) else resolve(config))
    run = _Run(trainer, RunFolder(out), world, emit, begun)
    try:
        run.set_up(resuming=resume is not None, overwrite=overwrite)
        with interrupts.guard() as stop:
            return run.loop(stop)
    except distributed.PeerLost as exc:
        raise run.rank_failed(exc) from None
    except WriteError as exc:  # a full disk: say which checkpoint is whole and how to go on from it
        if exc.flag is not None:  # refused before any work (an unwritable --out): nothing to resume
            raise
        exc.resumable = True
        try:
            exc.last_good = str(checkpoint.peek_newest(run.folder.path)[0])
        except CheckpointError:  # none written yet, or none whole
            exc.last_good = None
        raise
    finally:
        if run.log is not None:
            run.log.close()


class _Run:
    """One training run in progress: the trainer, its folder, and on rank 0 its log and
    evaluator. Every rank steps the loop; rank 0 alone evaluates, draws, logs and reports."""

    def __init__(self, trainer: Trainer, folder: RunFolder, world: distributed.World, emit: EventHandler, begun: float):
        self.trainer, self.cfg, self.folder, self.world, self.emit = trainer, trainer.cfg, folder, world, emit
        self.main = world.main
        self.begun = begun  # when the run was asked for: the summary's wall time counts from here
        self.log: RunLog | None = None
        self.evaluator: Evaluator | None = None
        found = folder.checkpoints()  # (rollback under torchrun needs a shared filesystem)
        self.last_good: Path | None = found[-1] if found else None  # a resumed run's own checkpoints count
        self.last_ckpt: Path | None = None
        self.saved_at: int | None = None
        self.rollbacks = 0
        self.last_stats: dict[str, Any] = {}
        self.last_eval: tuple[int, dict[str, Any]] | None = None  # (step, evaluation) of the newest eval step

    def set_up(self, resuming: bool, overwrite: bool) -> None:
        """Prepare the folder, the log and the evaluator on rank 0 (every rank learns whether
        that worked), then announce the start."""
        trainer, world, failure = self.trainer, self.world, None
        if self.main:
            try:
                self.evaluator = Evaluator(trainer.nets)  # refuses data too small for its metrics: before any write
                self.folder.prepare(resuming=resuming, overwrite=overwrite)
                self.folder.write_config(self.cfg.to_dict())
                held = getattr(trainer.dataset, "held_out", None)
                if held is not None:
                    data = trainer.dataset
                    total = len(data) + len(held)
                    self.folder.record_holdout(
                        self.cfg.data, data.whole_fingerprint, total, data.held_indices, resuming
                    )
                self.log = RunLog(self.folder, self.cfg, trainer.step if resuming else None)
                for skipped in trainer.dataset.skipped:
                    self.emit(Warned(f"skipped an unreadable image: {skipped}"))
            except Exception as exc:  # noqa: BLE001 - re-raised below, after telling the other ranks
                failure = exc
        if world.active:
            distributed.wait_for_main(world)  # rank 0 may take long (an FID's reference features)
        if not distributed.all_ok(failure is None, world):
            if failure is not None:
                raise failure
            raise ConfigError(f"rank {world.rank}: rank 0 could not set up the run (its message says why)")
        self.first_step = trainer.step
        if self.main and distributed.run_id() is not None:  # this torchrun job's folder: a restart resumes it
            write_text_atomic(self.folder.torchrun_id, distributed.run_id() + "\n")
        for note in trainer.notes:
            self.emit(Warned(note))
        restarts = distributed.restart_count()
        if restarts:
            limit = os.environ.get("TORCHELASTIC_MAX_RESTARTS", "?")
            where = f"from step {self.first_step}" if resuming else "from the start: no checkpoint had been written"
            self.emit(Warned(f"torchrun restarted the group ({restarts} of {limit}); resuming {where}"))
        start = Started(
            self.cfg.to_dict(),
            str(trainer.device),
            self.first_step,
            str(self.folder.path),
            trainer.exact_resume,
            world.size,
        )
        self.emit(start)

    def save_checkpoint(self, step: int) -> Path | None:
        """A collective: every rank's random stream is gathered; rank 0 writes and prunes."""
        trainer, world = self.trainer, self.world
        states = distributed.gather_states(trainer.rng.get_state(), world, trainer.device)
        if not self.main:
            return None
        path = checkpoint.save(capture(trainer), self.folder.checkpoint_path(step), states if world.active else None)
        for removed in self.folder.prune(self.cfg.keep_last, readable=checkpoint.peek):
            self.emit(Pruned(str(removed)))
        return path

    def loop(self, stop: interrupts.Guard) -> Summary | None:
        started = time.perf_counter()
        self.started = started
        while self.trainer.step < self.cfg.steps:
            if not self.step():
                continue
            step = self.trainer.step
            self.stop_if_signalled(stop, step)
            if _due(step, self.cfg.ckpt_every):
                self.last_ckpt, self.saved_at = self.save_checkpoint(step), step
                self.last_good = self.folder.checkpoint_path(step)
                if self.main:
                    self.emit(Saved(step, str(self.last_ckpt)))
            if self.main:
                self.report(step)
            if self.world.active and self.alone_at(step):
                distributed.wait_for_main(self.world)  # rank 0 evaluated, drew or wrote alone
        wall = time.perf_counter() - started
        if self.saved_at != self.trainer.step:
            self.last_ckpt = self.save_checkpoint(self.trainer.step)
        in_sync = distributed.in_sync([self.trainer.generator, self.trainer.critic], self.world)
        if not self.main:
            return None
        return self.summary(wall, in_sync)

    def alone_at(self, step: int) -> bool:
        """Whether rank 0 works alone after this step (every rank knows the schedule)."""
        cfg = self.cfg
        return any(_due(step, every) for every in (cfg.eval_every, cfg.sample_every, cfg.ckpt_every))

    def rank_failed(self, exc: distributed.PeerLost) -> RankFailed:
        """The one line for a lost peer: this rank, the step, the newest checkpoint, how to go on."""
        try:
            newest = str(checkpoint.peek_newest(self.folder.path)[0])
        except CheckpointError:
            newest = None
        step, size = self.trainer.step, self.world.size
        what = (
            f"no answer from a peer within --dist-timeout {self.cfg.dist_timeout:g} s"
            if exc.timed_out
            else "a peer process failed"
        )
        resume = f"ganctl train --resume {self.folder.path} --nproc {size}" if newest else "start the run again"
        where = f"newest checkpoint {newest}" if newest else "no checkpoint had been written"
        error = RankFailed(f"rank {exc.rank}: {what} at step {step} ({exc.detail}); {where}; resume with: {resume}")
        error.details = {
            "rank": exc.rank,
            "step": step,
            "checkpoint": newest,
            "resume": resume,
            "timed_out": exc.timed_out,
        }
        return error

    def step(self) -> bool:
        """One training step; False when a non-finite value was rolled back instead."""
        try:
            self.trainer.train_step()
            return True
        except NonFinite as exc:
            cfg, last_good = self.cfg, self.last_good
            if cfg.on_nonfinite != "rollback" or last_good is None or self.rollbacks >= MAX_ROLLBACKS:
                why = ""
                if cfg.on_nonfinite == "rollback":
                    why = "; no checkpoint to roll back to" if last_good is None else ""
                    why = why or f"; rolled back {self.rollbacks} times already"
                details = {
                    "stopped": "nonfinite",
                    "step": exc.step,
                    "quantity": exc.quantity,
                    "on_nonfinite": cfg.on_nonfinite,
                    "rollbacks": self.rollbacks,
                    "last_good": str(last_good) if last_good is not None else None,
                }
                raise TrainingFailed(
                    f"{exc}{why}; last good checkpoint: {last_good or 'none'}"
                    " (--on-nonfinite skip drops such updates, rollback reloads the last checkpoint)",
                    details,
                ) from None
            self.rollbacks += 1
            roll_back(self.trainer, checkpoint.read_state(last_good), self.rollbacks)
            message = f"{exc}; rolled back to {last_good} with a fresh random stream ({self.rollbacks}/{MAX_ROLLBACKS})"
            self.emit(Warned(message))
            return False

    def stop_if_signalled(self, stop: interrupts.Guard, step: int) -> None:
        """A signal ends the run after this step, with a checkpoint (every rank must agree)."""
        if distributed.all_ok(stop.signum is None, self.world):
            return
        path = self.save_checkpoint(step) if self.saved_at != step else self.last_ckpt
        if path is not None:
            self.last_good = path
        raise Interrupted(
            f"interrupted by {stop.name or 'a signal on another rank'} at step {step}; checkpoint {path};"
            f" continue with: ganctl train --resume {path}",
            stop.signum or 15,
            {"step": step, "checkpoint": str(path) if path is not None else None},
        )

    def report(self, step: int) -> None:
        """Rank 0's log record, evaluation and picture at this step, as their schedules say."""
        cfg, log, evaluator = self.cfg, self.log, self.evaluator
        record: dict[str, Any] = {"step": step}
        if _due(step, cfg.log_every):
            self.last_stats = self.trainer.pop_stats()
            record.update(self.last_stats)
            record["elapsed_s"] = round(time.perf_counter() - self.started, 3)
        if _due(step, cfg.eval_every):
            self.last_eval = (step, evaluator.measure())
            record.update({f"eval/{k}": v for k, v in self.last_eval[1].items()})
            log.histogram("gradnorm/interp", evaluator.last_norms, step)
        if len(record) > 1:
            log.write(record)
            self.emit(Logged(record))
        if _due(step, cfg.sample_every):
            picture = self.folder.sample_path(step)
            log.picture("samples", evaluator.draw(picture, f"{cfg.data}  {cfg.lipschitz}  step {step}"), step)
            self.emit(Drew(step, str(picture)))
        self.emit(Stepped(step))

    def summary(self, wall: float, in_sync: bool) -> Summary:
        """The final evaluation (in metrics.jsonl: the last step's, or a record marked final) and picture, and the
        run's summary (emitted as `Ended`): its wall time is the whole run's, from before the
        data was read to after the final picture; s_per_step the training loop's alone."""
        trainer, cfg, evaluator = self.trainer, self.cfg, self.evaluator
        stats = {**self.last_stats, **trainer.pop_stats()}  # steps since the last log, over that log
        if self.last_eval is not None and self.last_eval[0] == trainer.step:
            final = self.last_eval[1]  # this step's evaluation, already in the log: the same inputs and weights
        else:
            final = evaluator.measure()
            self.log.write({"step": trainer.step, "final": True, **{f"eval/{k}": v for k, v in final.items()}})
        picture = self.folder.sample_path(None)
        evaluator.draw(picture, f"{cfg.data}  {cfg.lipschitz}  step {trainer.step} (final)")
        trained = trainer.step - self.first_step
        summary = Summary(
            run_dir=str(self.folder.path),
            checkpoint=str(self.last_ckpt),
            picture=str(picture),
            step=trainer.step,
            steps_trained=trained,
            wall_s=round(time.perf_counter() - self.begun, 3),
            s_per_step=round(wall / trained, 6) if trained else None,
            device=str(trainer.device),
            exact_resume=trainer.exact_resume,
            world_size=self.world.size,
            ranks_in_sync=in_sync,
            restarts=distributed.restart_count(),
            final={**stats, **final},
            image_metrics_on=evaluator.measured_on(),
            config=cfg.to_dict(),
        )
        self.emit(Ended(summary))
        return summary
