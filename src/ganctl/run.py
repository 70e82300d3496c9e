"""A training run on disk: the loop around `Trainer` that writes the run directory.

    RUN/config.json          the resolved config
    RUN/metrics.jsonl        one JSON object per logged or evaluated step
    RUN/checkpoints/         step-NNNNNNN.safetensors
    RUN/samples/             step-NNNNNNN.png and final.png (2-D: points over the critic
                             field; images: an 8 x 8 grid from fixed latents)

Progress is reported through `on_event(kind, payload)`; nothing here prints.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from ganctl import checkpoint, interrupts
from ganctl.analysis.quality import mixture_quality, wasserstein1
from ganctl.config import TrainConfig
from ganctl.engine import Trainer, eval_mode
from ganctl.errors import ConfigError, Interrupted, NonFinite, TrainingFailed
from ganctl.fileio import write_text_atomic
from ganctl.render import image_grid, save_image, scatter_over_field

MAX_ROLLBACKS = 3  # --on-nonfinite rollback: reloads per run before giving up
EventHandler = Callable[[str, dict[str, Any]], None]
W1_SAMPLES = 512  # exact assignment is O(n^3); 512 points take about a second
FIELD_RESOLUTION = 128
PLOT_POINTS = 1000
GRID_IMAGES = 64  # an 8 x 8 grid from fixed latents
EVAL_BATCH = 500
GRADNORM_POINTS = 512  # interpolates measured at each eval (the gradnorm command's summary)
GRADNORM_TOL = 0.1


def _due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def prepare_run_dir(out: Path, resuming: bool, overwrite: bool) -> None:
    """Create `out`, refuse to train over an earlier run's checkpoints, and check it is
    writable before any work starts."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    if not resuming and checkpoint.list_checkpoints(out) and not overwrite:
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
        for path in checkpoint.list_checkpoints(out):
            path.unlink()
        (out / "metrics.jsonl").unlink(missing_ok=True)


class MetricsLog:
    """Append-only JSONL; on resume, records past the resumed step are dropped so that the log
    reads as one uninterrupted run."""

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


class Evaluator:
    """Fixed real samples and fixed latents, drawn once from their own seeded stream, so every
    evaluation and picture of a run (and of a resumed run) uses the same inputs."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        cfg = trainer.cfg
        rng = trainer.eval_generator()
        self.dataset = dataset = trainer.dataset
        self.points = dataset.kind == "points"
        self.latents = trainer.noise(cfg.eval_samples, rng)
        # Real points for the gradient-norm summary, from a stream of their own so that adding
        # them changed no other evaluation input.
        self.n_gradnorm = min(GRADNORM_POINTS, cfg.eval_samples)
        self.real_gradnorm = dataset.sample(self.n_gradnorm, trainer.eval_generator(offset=1), trainer.device)
        if not self.points:
            return
        self.real = dataset.sample(cfg.eval_samples, rng, trainer.device)
        self.n_w1 = min(W1_SAMPLES, cfg.eval_samples)
        self.real_w1 = dataset.sample(self.n_w1, rng, trainer.device)
        self.centres = dataset.centres_tensor()
        self.extent = plot_extent(self.real)
        # The W1 a perfect generator would still show at this sample size.
        self.w1_floor = wasserstein1(self.real[: self.n_w1], self.real_w1)

    @torch.no_grad()
    def fake(self, n: int | None = None) -> torch.Tensor:
        net = self.trainer.sampler
        latents = self.latents[:n]
        with eval_mode(net):
            return torch.cat([net(z).float() for z in latents.split(EVAL_BATCH)])

    def evaluate(self) -> dict[str, Any]:
        fake = self.fake()
        result: dict[str, Any] = self.gradnorm(fake[: self.n_gradnorm])
        if not self.points:
            quality = getattr(self.dataset, "quality", None)
            return {**(quality(fake) if quality is not None else {}), **result}
        result.update({"w1": wasserstein1(fake[: self.n_w1], self.real_w1), "w1_floor": self.w1_floor})
        if self.centres is not None:
            result.update(mixture_quality(fake, self.centres, self.dataset.std))
        return result

    def gradnorm(self, fake: torch.Tensor) -> dict[str, float]:
        """`ganctl gradnorm`'s interpolate summary: ||grad D(x_hat)|| on fixed real points and
        the fixed latents' samples, with interpolation coefficients drawn the same every time."""
        from ganctl.analysis.gradnorm import gradient_norms, summarise
        from ganctl.penalties import interpolate

        x_hat = interpolate(self.real_gradnorm, fake.to(self.real_gradnorm.dtype), self.trainer.eval_generator(offset=2))
        stats = summarise(gradient_norms(self.trainer.critic, x_hat)[1], GRADNORM_TOL)
        return {"gradnorm_mean": stats["mean"], "gradnorm_q50": stats["q50"], "violation_share": stats["above"],
                "vanishing_share": stats["vanishing"]}

    def draw(self, path: Path | None, title: str) -> Image.Image:
        """The run's picture (a grid from fixed latents, or 2-D points over the critic's
        field), saved to `path` unless it is None, and returned."""
        if not self.points:
            grid = image_grid(self.fake(GRID_IMAGES).cpu().numpy(), columns=8)
            if path is not None:
                save_image(path, grid)
            return grid
        return draw_points(path, self.trainer, self.real[:PLOT_POINTS], self.fake(PLOT_POINTS), title, self.extent)


def plot_extent(real: torch.Tensor) -> tuple[float, float, float, float]:
    """A square view around the central 99.8 % of the real points, with a margin."""
    lo = torch.quantile(real.float().cpu(), 0.001, dim=0)
    hi = torch.quantile(real.float().cpu(), 0.999, dim=0)
    centre, half = (lo + hi) / 2, float((hi - lo).max()) / 2 * 1.35
    return (float(centre[0]) - half, float(centre[0]) + half, float(centre[1]) - half, float(centre[1]) + half)


def draw_points(
    path: Path | None, trainer: Trainer, real: torch.Tensor, fake: torch.Tensor, title: str,
    extent: tuple[float, float, float, float] | None = None,
) -> Image.Image:
    """Real and generated 2-D points over the critic's value field, as a PNG."""
    xmin, xmax, ymin, ymax = extent = extent or plot_extent(real)
    xs = torch.linspace(xmin, xmax, FIELD_RESOLUTION, device=trainer.device)
    ys = torch.linspace(ymin, ymax, FIELD_RESOLUTION, device=trainer.device)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(-1, 2)
    field = trainer.critic_values(grid).reshape(FIELD_RESOLUTION, FIELD_RESOLUTION)
    return scatter_over_field(
        path, extent, real.cpu().numpy(), fake.cpu().numpy(), field.cpu().numpy().astype(np.float64), title
    )


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
    `ganctl.distributed`); rank 0 alone evaluates, draws, logs and writes checkpoints."""
    from ganctl import distributed

    out = Path(out)
    started_group = distributed.requested() and not distributed.current().active
    if distributed.requested():
        spec = (overrides or {}).get("device") or (config.device if config is not None else None) or "auto"
        if resume is not None and spec == "auto":
            spec = checkpoint.read(checkpoint.find_checkpoint(Path(resume)))[2].device
        from ganctl.devices import resolve_device

        distributed.init(resolve_device(spec))
    try:
        return _train(config, out, resume, overrides, overwrite, on_event)
    finally:
        if started_group:
            distributed.shutdown()


def _train(config: TrainConfig | None, out: Path, resume: str | Path | None, overrides: dict[str, Any] | None,
           overwrite: bool, on_event: EventHandler | None) -> dict[str, Any]:
    from ganctl import distributed

    world = distributed.current()
    emit = (on_event if world.main else None) or (lambda kind, payload: None)
    if resume is not None:
        trainer = checkpoint.open_trainer(Path(resume), overrides=overrides)
    else:
        trainer = Trainer(config or TrainConfig())
    cfg = trainer.cfg
    main = world.main
    failure: Exception | None = None
    if main:
        try:
            prepare_run_dir(out, resuming=resume is not None, overwrite=overwrite)
            write_text_atomic(out / "config.json", json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n")
            log = MetricsLog(out / "metrics.jsonl", trainer.step if resume is not None else None)
            evaluator = Evaluator(trainer)
            for skipped in getattr(trainer.dataset, "skipped", []):
                emit("warning", {"message": f"skipped an unreadable image: {skipped}"})
            (out / "samples").mkdir(exist_ok=True)
        except Exception as exc:  # noqa: BLE001 - re-raised below, after telling the other ranks
            failure = exc
    if not distributed.all_ok(failure is None, world):
        if failure is not None:
            raise failure
        raise ConfigError(f"rank {world.rank}: rank 0 could not set up the run (its message says why)")
    first_step = trainer.step
    for note in getattr(trainer, "notes", []):
        emit("warning", {"message": note})
    emit("start", {"config": cfg.to_dict(), "device": str(trainer.device), "step": first_step, "out": str(out),
                   "exact_resume": trainer.exact_resume, "world_size": world.size})

    def save_checkpoint(step: int) -> Path | None:  # a collective: every rank's stream is kept
        states = distributed.gather_states(trainer.rng.get_state(), world, trainer.device)
        if not main:
            return None
        return checkpoint.save(trainer, checkpoint.checkpoint_path(out, step), states if world.active else None)

    with interrupts.guard() as stop:
        return _loop(trainer, out, world, main, emit, save_checkpoint, stop, first_step,
                     log if main else None, evaluator if main else None)


def _loop(trainer: Trainer, out: Path, world: Any, main: bool, emit: EventHandler,
          save_checkpoint: Callable[[int], Path | None], stop: interrupts.Guard, first_step: int,
          log: MetricsLog | None, evaluator: Evaluator | None) -> dict[str, Any]:
    from ganctl import distributed

    cfg = trainer.cfg
    started = time.perf_counter()
    last_ckpt, saved_at = None, None
    found = checkpoint.list_checkpoints(out)  # (rollback under torchrun needs a shared filesystem)
    last_good: Path | None = found[-1] if found else None  # a resumed run's own checkpoints count
    last_stats: dict[str, Any] = {}
    rollbacks = 0
    while trainer.step < cfg.steps:
        try:
            trainer.train_step()
        except NonFinite as exc:
            if cfg.on_nonfinite != "rollback" or last_good is None or rollbacks >= MAX_ROLLBACKS:
                why = "" if cfg.on_nonfinite != "rollback" else (
                    "; no checkpoint to roll back to" if last_good is None else f"; rolled back {rollbacks} times already")
                raise TrainingFailed(f"{exc}{why}; last good checkpoint: {last_good or 'none'}"
                                     " (--on-nonfinite skip drops such updates, rollback reloads the last checkpoint)") from None
            rollbacks += 1
            checkpoint.roll_back(trainer, last_good, rollbacks)
            emit("warning", {"message": f"{exc}; rolled back to {last_good} with a fresh random stream ({rollbacks}/{MAX_ROLLBACKS})"})
            continue
        step = trainer.step
        # A signal ends the run after this step, with a checkpoint (every rank must agree).
        if not distributed.all_ok(stop.signum is None, world):
            path = save_checkpoint(step) if saved_at != step else last_ckpt
            if path is not None:
                last_good = path
            signum = stop.signum or 15
            raise Interrupted(f"interrupted by {stop.name or 'a signal on another rank'} at step {step}; checkpoint {path};"
                              f" continue with: ganctl train --resume {path}", signum)
        if _due(step, cfg.ckpt_every):
            last_ckpt, saved_at = save_checkpoint(step), step
            last_good = checkpoint.checkpoint_path(out, step)
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
        if len(record) > 1:
            log.write(record)
            emit("log", record)
        if _due(step, cfg.sample_every):
            picture = out / "samples" / f"step-{step:07d}.png"
            evaluator.draw(picture, f"{cfg.data}  {cfg.lipschitz}  step {step}")
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
    picture = out / "samples" / "final.png"
    evaluator.draw(picture, f"{cfg.data}  {cfg.lipschitz}  step {trainer.step} (final)")
    trained = trainer.step - first_step
    summary = {
        "run_dir": str(out),
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
        "config": cfg.to_dict(),
    }
    emit("end", summary)
    return summary


def run_dir_of(path: Path) -> Path:
    """The run directory a checkpoint file belongs to (RUN/checkpoints/step-N.safetensors)."""
    path = Path(path)
    if path.is_dir():
        return path
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent

