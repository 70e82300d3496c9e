"""Where a comparison's jobs run: one after another in this process, N at once in worker
processes of this machine (`compare --jobs N`), or as tasks on a Ray cluster (`--launcher ray`).

Every job is an ordinary `ganctl.fleet.jobs.run_job` wherever it runs, so it trains, resumes and
writes its run folder exactly as a sequential comparison's, and with the same seeds its numbers
are the same (bitwise on the CPU at the same thread count). What differs is placement: each
job of a parallel comparison gets its own device (`cuda:0..k-1` round robin) or, on the CPU,
its own share of the threads; a Ray task asks the cluster for the CPUs and GPU it needs.

Worker processes are spawned once and take one job after another (a fresh process per job
would pay torch's import each time); a comparison's jobs are also evaluated where they ran, so
the evaluation is parallel too. Workers report through one queue (a `multiprocessing` queue
here, `ray.util.queue.Queue` on Ray): each job's training events, tagged with its place in
the plan, then its result or its error, so the terminal can show every running job.

Signals: a worker process runs in a session of its own, so Ctrl-C or SIGTERM reach this
process alone, which passes each on once to every running job; each job then writes a
checkpoint and stops, and the same command resumes them.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue as queues
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ganctl import interrupts
from ganctl.errors import ConfigError, GanctlError, Interrupted, JobFailed
from ganctl.fleet import report
from ganctl.fleet.jobs import Job, JobResult, run_job, status
from ganctl.training.events import Event, EventHandler, JobStarted, JobState, Stepped

LAUNCHERS = ("local", "ray")
POLL_S = 0.2


@dataclass(frozen=True)
class Placement:
    """How many jobs run at once, and where: `launcher` local (worker processes of this machine)
    or ray (tasks on the cluster at `ray_address`; None: $RAY_ADDRESS, else a local instance),
    a Ray task retried up to `retries` times when its worker dies."""

    jobs: int = 1
    launcher: str = "local"
    ray_address: str | None = None
    retries: int = 3

    def check(self) -> None:
        if self.jobs < 1:
            raise ConfigError(f"--jobs must be >= 1, got {self.jobs}")
        if self.launcher not in LAUNCHERS:
            raise ConfigError(f"--launcher {self.launcher!r} is not one of: {', '.join(LAUNCHERS)}")
        if self.retries < 0:
            raise ConfigError(f"--ray-retries must be >= 0, got {self.retries}")
        if self.launcher != "ray" and self.ray_address is not None:
            raise ConfigError("--ray-address needs --launcher ray")

    @property
    def sequential(self) -> bool:
        return self.launcher == "local" and self.jobs == 1


def placed(jobs: list[Job], parallel: int) -> list[Job]:
    """Each job on its own device: CUDA jobs round robin over the GPUs, CPU jobs with
    cpu_count // parallel threads each unless --threads was given."""

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    threads = max(1, (os.cpu_count() or 1) // parallel)
    out = []
    for i, job in enumerate(jobs):
        cfg = job.config
        if cfg.device.startswith("cuda") and gpus and cfg.device in ("cuda", "cuda:0"):
            cfg = replace(cfg, device=f"cuda:{i % gpus}")
        elif cfg.device == "cpu" and not cfg.threads:
            cfg = replace(cfg, threads=threads)
        out.append(replace(job, config=cfg))
    return out


class Runner:
    """Trains jobs, each announced by one "job" event (its place among `total`, method, seed,
    folder, state and trial) before the run's own events: here one after another, or as
    `placement` says. Finished jobs are announced and skipped wherever the others run."""

    def __init__(self, total: int, on_event: EventHandler | None = None, placement: Placement | None = None):
        self.total, self.done = total, 0
        self.on_event = on_event
        self.placement = placement or Placement()

    def announce(self, job: Job, state: JobState, index: int | None = None) -> None:
        if self.on_event is not None:
            where = {"run_dir": str(job.run_dir), "state": state, "trial": job.trial, "job": index}
            self.on_event(JobStarted(self.done, self.total, job.method, job.seed, **where))
        self.done += 1

    def run(self, job: Job, state: JobState | None = None) -> JobResult:
        """One job, in this process."""
        state = state or status(job)
        self.announce(job, state)
        return run_job(job, self.on_event, state)

    def run_all(self, jobs: list[Job], states: list[JobState] | None = None, evaluate: bool = False) -> list[JobResult]:
        """Every job, as the placement says; the results in the jobs' order. With `evaluate`,
        each result also holds the run's `report.measure_run` (with pictures) as `evaluated`,
        computed where the job ran: a parallel comparison evaluates in parallel too."""
        states = states or [status(job) for job in jobs]
        if self.placement.sequential:
            return [_evaluated(job, self.run(job, state), evaluate) for job, state in zip(jobs, states)]
        results: list[JobResult | None] = [None] * len(jobs)
        todo = []
        for i, (job, state) in enumerate(zip(jobs, states)):
            if state == "done" and not evaluate:
                self.announce(job, state, i)
                results[i] = JobResult("done")
            else:
                todo.append(i)
        if todo:
            subset = [jobs[i] for i in todo]

            def announce(k: int) -> None:
                self.announce(subset[k], states[todo[k]], todo[k])

            tasks = [Task(k, job, states[i], evaluate) for k, (i, job) in enumerate(zip(todo, subset))]
            if self.placement.launcher == "ray":
                ran = run_ray(tasks, self.placement, self._tagged(todo), announce)
            else:
                tasks = [replace(t, job=j) for t, j in zip(tasks, placed(subset, self.placement.jobs))]
                ran = run_local(tasks, self.placement.jobs, self._tagged(todo), announce)
            for i, result in zip(todo, ran):
                results[i] = result
        return results  # type: ignore[return-value]

    def _tagged(self, todo: list[int]) -> EventHandler | None:
        """Events tagged with the job's place among all the jobs given, not among those run."""
        if self.on_event is None:
            return None
        on_event = self.on_event
        return lambda event: on_event(replace(event, job=todo[event.job]))


# --- the worker's side ------------------------------------------------------------------------
STEP_EVERY_S = 0.5  # a worker reports its step count at most this often (a Ray queue put is a remote call)


@dataclass(frozen=True)
class Task:
    """One job for a worker: its place among the jobs run, its status, and whether to evaluate it."""

    index: int
    job: Job
    state: JobState
    evaluate: bool = False


def _evaluated(job: Job, result: JobResult, evaluate: bool) -> JobResult:
    if evaluate:
        result.evaluated = report.measure_run(job.run_dir, job.config.device, pictures=True)
    return result


def work(task: Task, put: Callable[[tuple], None]) -> None:
    """Run one task, reporting its events (its step at most every STEP_EVERY_S), then its
    result or its error, through `put`."""
    last_step = [0.0]

    def forward(event: Event) -> None:
        if isinstance(event, Stepped):
            now = time.monotonic()
            if now - last_step[0] < STEP_EVERY_S:
                return
            last_step[0] = now
        put(("event", task.index, event))

    try:
        result = _evaluated(task.job, run_job(task.job, forward, task.state), task.evaluate)
        put(("done", task.index, result))
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the driver as one line
        message = str(exc) or type(exc).__name__
        put(("error", task.index, message, getattr(exc, "exit_code", None) or _code(exc)))


def _code(exc: BaseException) -> int:
    """The exit code `ganctl.cli.output.handle_errors` gives an error without an `exit_code`."""

    if isinstance(exc, GanctlError):
        return 2
    if isinstance(exc, KeyboardInterrupt):
        return 130
    return 1  # TrainingFailed, and anything unexpected


def _local_worker(tasks: Any, channel: Any) -> None:
    """A worker process: tasks until it is sent None. It lives in a session of its own, so
    signals from the terminal reach the driver alone, which passes them on once per job."""
    os.setsid()
    for task in iter(tasks.get, None):
        channel.put(("start", task.index, os.getpid()))
        work(task, channel.put)


# --- the driver's side ------------------------------------------------------------------------
class _Driver:
    """The driver's loop over messages: events to `on_event`, results into place, the first
    error kept (no new job starts after it, and the running ones are stopped)."""

    def __init__(self, jobs: list[Job], on_event: EventHandler | None):
        self.results: list[JobResult | None] = [None] * len(jobs)
        self.failure: tuple[int, str, int] | None = None
        self.on_event = on_event
        self.jobs = jobs

    def handle(self, message: tuple) -> int | None:
        """Returns the index of a job that ended (done or failed), else None."""
        kind, index = message[0], message[1]
        if kind == "event":
            if self.on_event is not None:
                self.on_event(replace(message[2], job=index))
            return None
        if kind == "done":
            self.results[index] = message[2]
        elif self.failure is None or self.failure[2] in (130, 143):
            self.failure = (index, message[2], message[3])
        return index

    def finish(self, interrupted: int | None) -> list[JobResult]:
        if interrupted is not None:
            stopped = [str(self.jobs[i].run_dir) for i, r in enumerate(self.results) if r is None]
            raise Interrupted(
                f"interrupted by {signal.Signals(interrupted).name}: {len(stopped)} run(s) stopped with a checkpoint"
                " (run the same command again to resume them)",
                interrupted,
            )
        if self.failure is not None:
            index, message, code = self.failure
            raise JobFailed(
                f"{self.jobs[index].method} seed {self.jobs[index].seed} ({self.jobs[index].run_dir}): {message}", code
            )
        return list(self.results)  # type: ignore[arg-type] - every job ended with its result


def run_local(
    tasks: list[Task], parallel: int, on_event: EventHandler | None, announce: Callable[[int], None]
) -> list[JobResult]:
    """The tasks on `parallel` worker processes, spawned once (CUDA and thread pools start
    clean) and each given a new task when its last one ends."""

    context = multiprocessing.get_context("spawn")
    inbox, channel = context.Queue(), context.Queue()
    driver = _Driver([t.job for t in tasks], on_event)
    workers = [context.Process(target=_local_worker, args=(inbox, channel)) for _ in range(min(parallel, len(tasks)))]
    for proc in workers:
        proc.start()
    pending, running, forwarded = list(range(len(tasks))), {}, set()  # running: task -> its worker's pid
    try:
        with interrupts.guard() as stop:
            while pending or running:
                if driver.failure is not None or stop.signum is not None:  # no new job; the running ones stop
                    pending.clear()
                    _pass_on(stop.signum or signal.SIGTERM, running, forwarded)
                while pending and len(running) < len(workers):
                    i = pending.pop(0)
                    announce(i)
                    running[i] = None  # until its worker says it started
                    inbox.put(tasks[i])
                for i in _drain(channel, driver, running):
                    running.pop(i, None)
                _bury(workers, running, channel, driver)
    finally:
        for _ in workers:
            inbox.put(None)
        for proc in workers:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    return driver.finish(stop.signum)


def _bury(workers: list[Any], running: dict[int, int | None], channel: Any, driver: _Driver) -> None:
    """A worker killed outright (SIGKILL, out of memory) fails the job it was running."""
    dead = {proc.pid: proc.exitcode for proc in workers if not proc.is_alive()}
    for i, pid in list(running.items()):
        if pid in dead:
            for j in _drain(channel, driver, running):  # its last words, if it had time to say them
                running.pop(j, None)
            if i in running:
                running.pop(i)
                driver.handle(("error", i, f"its worker process died (exit code {dead[pid]})", 1))


def _drain(channel: Any, driver: _Driver, running: dict[int, int | None]) -> list[int]:
    ended = []
    try:
        message = channel.get(timeout=POLL_S)
        while True:
            if message[0] == "start":
                running[message[1]] = message[2]
            else:
                index = driver.handle(message)
                if index is not None:
                    ended.append(index)
            message = channel.get_nowait()
    except queues.Empty:
        pass
    return ended


def _pass_on(signum: int, running: dict[int, int | None], forwarded: set[int]) -> None:
    """Each running job's worker gets the signal once (a second would stop it without a checkpoint)."""
    for i, pid in running.items():
        if i not in forwarded and pid is not None:
            forwarded.add(i)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)


# --- Ray ----------------------------------------------------------------------------------------
def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("--launcher ray needs Ray: pip install 'ganctl[ray]'") from None
    return ray


def _ray_job(task: Task, channel: Any) -> None:
    """A Ray task: one job, resumed from its folder's newest checkpoint when Ray retries it."""
    work(replace(task, state=status(task.job)), channel.put)


def run_ray(
    tasks: list[Task], placement: Placement, on_event: EventHandler | None, announce: Callable[[int], None]
) -> list[JobResult]:
    """Every job a Ray task asking for its CPUs (the job's --threads, else 1) and, on CUDA, one
    GPU; at most `placement.jobs` in flight. Run folders must be on a filesystem every node sees."""
    ray = _ray()
    from ray.util.queue import Queue

    started_here = not ray.is_initialized()
    if started_here:
        _connect(ray, placement.ray_address)
    try:
        channel, remote = Queue(), ray.remote(_ray_job)
        driver = _Driver([t.job for t in tasks], on_event)
        pending, running = list(range(len(tasks))), {}
        with interrupts.guard() as stop:
            while pending or running:
                while pending and len(running) < placement.jobs and driver.failure is None and stop.signum is None:
                    i = pending.pop(0)
                    announce(i)
                    options = _ray_resources(tasks[i].job, placement.retries)
                    running[i] = remote.options(**options).remote(
                        replace(tasks[i], job=_ray_placed(tasks[i].job)), channel
                    )
                _drain_ray(channel, driver)
                if running:
                    _collect_ray(ray, running, channel, driver)
                if (stop.signum is not None or driver.failure is not None) and pending + list(running):
                    for ref in running.values():
                        ray.cancel(ref)  # a KeyboardInterrupt in the task: it checkpoints and stops
                    pending.clear()
        return driver.finish(stop.signum)
    finally:
        if started_here:
            ray.shutdown()


def _connect(ray: Any, address: str | None) -> None:
    """Join the cluster at `address` (None: $RAY_ADDRESS, else a new instance on this machine)."""
    _reachable(address)  # ray.init retries an address nobody answers at for minutes
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = f"--ray-address {address}" if address else "--launcher ray"
        raise ConfigError(
            f"{where}: cannot join a Ray cluster ({why}); start one with `ray start --head` and give --ray-address"
            " auto on one of its nodes (Ray's token authentication then finds its token), or HOST:PORT"
        ) from None


def _reachable(address: str | None) -> None:
    host, _, port = (address or "").removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # auto, local, or none: Ray finds (or starts) the instance itself
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise ConfigError(
            f"--ray-address {address}: cannot join a Ray cluster (nothing answers there: {exc.strerror or exc});"
            " start one with `ray start --head` and give its HOST:PORT, or auto on one of its nodes"
        ) from None


def _collect_ray(ray: Any, running: dict[int, Any], channel: Any, driver: _Driver) -> None:
    """The tasks that ended within a poll: their last messages, and a task that failed for good
    (its retries spent, or cancelled) as the job's error unless the job said why itself."""
    ready, _ = ray.wait(list(running.values()), num_returns=1, timeout=POLL_S)
    for ref in ready:
        i = next(k for k, r in running.items() if r == ref)
        try:
            ray.get(ref)
            failed = None
        except Exception as exc:  # noqa: BLE001 - ray's RayTaskError, WorkerCrashedError, TaskCancelledError
            failed = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        _drain_ray(channel, driver)
        if failed is not None and driver.results[i] is None and (driver.failure is None or driver.failure[0] != i):
            driver.handle(("error", i, f"its Ray task failed ({failed})", 1))
        running.pop(i)


def _ray_resources(job: Job, retries: int) -> dict[str, Any]:
    cuda = job.config.device.startswith("cuda")
    return {"num_cpus": job.config.threads or 1, "num_gpus": 1 if cuda else 0, "max_retries": retries}


def _ray_placed(job: Job) -> Job:
    """Inside its task a job sees only the GPU Ray gave it, as cuda:0; the folder by its full path."""
    cfg = job.config
    if cfg.device.startswith("cuda"):
        cfg = replace(cfg, device="cuda:0")
    if not cfg.threads:
        cfg = replace(cfg, threads=1)
    return replace(job, config=cfg, run_dir=Path(job.run_dir).resolve())


def _drain_ray(channel: Any, driver: _Driver) -> None:
    waiting = channel.qsize()
    if waiting:
        for message in channel.get_nowait_batch(waiting):
            driver.handle(message)
