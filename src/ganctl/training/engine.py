"""The training step and its state. The engine owns the order of zero_grad, backward and
step for both networks; it reports numbers and never prints or writes files.

A `Trainer` is a `ganctl.nets.networks.Networks` with optimizers, gradient scalers and a random
stream. Its whole state goes out with `state_dict()` and comes back with `load_state_dict()`
(`ganctl.nets.checkpoint` writes and reads it; `resume` rebuilds a trainer from a file).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ganctl import streams
from ganctl.config import SCHEDULE_FIELDS, ResolvedConfig, TrainConfig, flag_of
from ganctl.data import load_dataset
from ganctl.devices import resolve_device
from ganctl.errors import CheckpointError, ConfigError, GanctlError, NonFinite
from ganctl.methods import penalties
from ganctl.methods.losses import gap_stats, get_loss
from ganctl.methods.registry import resolve
from ganctl.methods.strategies import build_strategy
from ganctl.models import activations
from ganctl.nets import checkpoint
from ganctl.nets.networks import Networks, build, eval_mode
from ganctl.training import distributed, fused_mlp

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Optimizer settings that say how an update is computed, not what it computes: they belong to
# the machine that runs it, not to a checkpoint.
OPTIMIZER_IMPLEMENTATION_FLAGS = ("fused", "foreach", "capturable", "differentiable")


def make_optimizer(cfg: TrainConfig, params: Any, lr: float) -> torch.optim.Optimizer:
    """Adam (fused where torch has the kernel, else foreach) or RMSprop (foreach), with the
    configured lr and betas as they are.

    Lazy regularisation (--reg-every N) needs no correction here: the penalty, weighted by N,
    is added to the loss of every N-th ordinary critic step, so N batches take N optimizer
    steps and the strength per batch is the one asked for. StyleGAN2's correction (lr * c,
    beta ** c with c = N / (N + 1)) belongs to its *separate* regularisation step, where N
    batches take N + 1 steps; applied to this scheme it would only lower the lr."""
    params = list(params)
    if cfg.optimizer == "adam":
        betas = (cfg.beta1, cfg.beta2)
        try:  # one fused kernel per step where torch has it for this device
            return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
        except RuntimeError:
            return torch.optim.Adam(params, lr=lr, betas=betas, foreach=True)
    return torch.optim.RMSprop(params, lr=lr, foreach=True)


class Trainer(Networks):
    """A generator, a critic kept Lipschitz by a strategy, their optimizers, an optional EMA
    of the generator, and one random stream for data, latents and interpolation.

    `fused` chooses how a penalised critic step of a plain ReLU / LeakyReLU MLP critic runs:
    None (the default) takes the hand-written step of `ganctl.training.fused_mlp` wherever it applies
    (CPU and CUDA, no autocast), False always takes autograd, True requires the hand-written
    step and refuses a critic it does not cover. Both give the same numbers up to rounding.

    `config` is resolved (`ganctl.methods.registry.resolve`): the entry points (`ganctl.train`,
    `ganctl.resume`, `ganctl compare`) resolve it once and pass it on."""

    def __init__(
        self,
        config: ResolvedConfig,
        device: torch.device | str | None = None,
        load_data: bool = True,
        world: distributed.World | None = None,
        fused: bool | None = None,
    ):
        if not isinstance(config, ResolvedConfig):
            raise ConfigError("Trainer takes a resolved config: Trainer(ganctl.methods.registry.resolve(config))")
        cfg = config
        device = torch.device(device) if device is not None else resolve_device(cfg.device)
        world = world if world is not None else distributed.current()
        if world.active and device.type == "cuda" and device.index is None:
            device = torch.device("cuda", world.local_rank)  # one GPU per rank
        dataset = None
        if load_data:
            # A fresh run reads its data now (errors before any work) and records the image
            # size and channels it found, so the checkpoint rebuilds without the data.
            dataset = load_dataset(cfg)
            if dataset.kind == "images":
                c, size, _ = dataset.shape
                cfg = cfg.replace(image_size=size, channels=c)
            if cfg.conditional:  # the data says how many classes, and their names
                cfg = cfg.replace(num_classes=dataset.classes.count)
        self.strategy = build_strategy(cfg)
        self.loss = get_loss(cfg.loss)
        generator, critic, ema = build(cfg, self.strategy)
        # CUDA: channels-last convolutions (the layout tensor cores read).
        channels_last = device.type == "cuda" and cfg.arch in ("dcgan", "resnet")
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        generator, critic, ema = (
            m.to(device, memory_format=self.memory_format) if m is not None else None for m in (generator, critic, ema)
        )
        names = dataset.classes.names if dataset is not None and cfg.conditional else None
        super().__init__(cfg, device, generator, critic, ema, dataset=dataset, class_names=names)
        self.world = world
        distributed.broadcast_modules([m for m in (generator, critic, ema) if m is not None], world)
        self.notes: list[str] = []  # said once at the start of a run
        self._build_step(fused)
        self.rng = torch.Generator(device=device)
        self.rng.manual_seed(streams.rank_seed(cfg.seed, world.rank))  # rank 0: the seed itself
        self.critic_steps = 0
        self.amp_skipped = 0  # fp16 steps the gradient scaler skipped after an overflow
        self.nonfinite_skipped = 0  # updates dropped by --on-nonfinite skip
        self.exact_resume = True  # False after resuming another device type's random stream
        self._sums: dict[str, Tensor] = {}
        self._counts: dict[str, int] = {}
        self._last_batch: tuple[Tensor, Tensor] | None = None

    def _build_step(self, fused: bool | None) -> None:
        """Optimizers, gradient scalers, compiled forwards and the penalised step's path."""
        cfg = self.cfg
        # Parameter lists, walked every step (module.parameters() re-walks the module tree).
        self._generator_params = tuple(self.generator.parameters())
        self._critic_params = tuple(self.critic.parameters())
        self.opt_g = make_optimizer(cfg, self._generator_params, cfg.lr_g)
        self.opt_d = make_optimizer(cfg, self._critic_params, cfg.lr_d)
        self._base_lr_g, self._base_lr_d = cfg.lr_g, cfg.lr_d  # --lr-decay scales these
        # Mixed precision: autocast for forwards; with fp16, a gradient scaler per optimizer and
        # the penalty's input gradients taken from the scaled output, then unscaled (PyTorch's
        # AMP recipe for gradient penalties). bf16 needs no scaler (enabled=False: no-ops).
        self.amp_dtype = AMP_DTYPES.get(cfg.amp)
        self.scaler_d = torch.amp.GradScaler(self.device.type, enabled=cfg.amp == "fp16")
        self.scaler_g = torch.amp.GradScaler(self.device.type, enabled=cfg.amp == "fp16")
        # --compile: compiled forwards wherever one backward follows; torch.compile does not
        # support the double backward of a penalty, so penalised critic passes stay eager.
        self._generator_fast, self._critic_fast = self.generator, self.critic
        if cfg.compile:
            self._generator_fast = torch.compile(self.generator)
            if self.strategy.compilable:
                self._critic_fast = torch.compile(self.critic)
        # The hand-written step covers plain MLP critics, without autocast, on CPU and CUDA
        # (its out= kernels are untried on MPS).
        self._fused_layers, self._workspace = None, {}
        penalised = self.strategy.penalty_at is not None
        if penalised and fused is not False and self.amp_dtype is None and self.device.type in ("cpu", "cuda"):
            self._fused_layers = fused_mlp.layers_of(self.critic)
        if fused and self._fused_layers is None:
            raise ConfigError(
                "fused=True: the hand-written step needs a penalised plain ReLU/LeakyReLU MLP critic"
                " on CPU or CUDA without --amp"
            )
        if cfg.compile and penalised:
            how = (
                "run ganctl's hand-written MLP step, eagerly"
                if self._fused_layers is not None
                else "run eagerly (torch.compile does not support the penalty's double backward)"
            )
            self.notes.append(
                f"--compile: the penalised critic steps {how}; the generator and the other critic passes are compiled"
            )

    @property
    def uses_fused_step(self) -> bool:
        """Whether penalised critic steps take the hand-written MLP step."""
        return self._fused_layers is not None

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    # --- one iteration ---------------------------------------------------------------
    def noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(n, self.cfg.z_dim, generator=generator or self.rng, device=self.device)

    def lr_factor(self) -> float:
        """The learning-rate multiplier at the current generator step (1 without decay)."""
        if self.cfg.lr_decay == "linear":
            return max(0.0, 1.0 - self.step / self.cfg.decay_steps)
        return 1.0

    def _apply_lr_schedule(self) -> None:
        f = self.lr_factor()
        for opt, base in ((self.opt_g, self._base_lr_g), (self.opt_d, self._base_lr_d)):
            for group in opt.param_groups:
                group["lr"] = base * f

    def train_step(self) -> None:
        """n_critic critic steps, then one generator step and the EMA update."""
        if self.cfg.lr_decay != "none":
            self._apply_lr_schedule()
        with self._precision():
            for _ in range(self.cfg.n_critic):
                with self.strategy.step_context():
                    self.critic_step()
            with self.strategy.step_context():
                self.generator_step()
        self.step += 1
        self._update_ema()

    @contextlib.contextmanager
    def _precision(self) -> Iterator[None]:
        """On CUDA, TensorFloat-32 products as --tf32 asks, for this trainer's steps only: the
        process-wide flags are restored afterwards."""
        if self.device.type != "cuda":
            yield
            return
        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = self.cfg.tf32
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved

    def critic_step(self) -> None:
        """One critic update: loss, penalty (every reg_every-th step) and optimizer step. A
        conditional critic sees the real batch's labels, and the fake batch is drawn with the
        same labels, so every penalised point (an interpolate pairs a real and a fake of one
        class) is taken at a fixed label."""
        cfg, b = self.cfg, self.cfg.batch_size
        real, y = self.dataset.sample_labelled(b, self.rng, self.device) if cfg.conditional else (None, None)
        if real is None:
            real = self.dataset.sample(b, self.rng, self.device)
        if real.dim() == 4:
            real = real.contiguous(memory_format=self.memory_format)
        with torch.no_grad(), self.autocast():
            fake = self._generate(self._generator_fast, self.noise(b), y).float()
        at = self.strategy.penalty_at
        if at is not None and self.critic_steps % cfg.reg_every != 0:
            at = None  # lazy regularisation: no penalty on this step
        leaves = penalties.penalty_points(at, real, fake, self.rng)
        self.opt_d.zero_grad(set_to_none=True)
        if leaves and self._fused_layers is not None:
            penalty_terms = fused_mlp.Penalty(self.strategy.penalty, self.strategy.penalty_grads, cfg.reg_every)
            d_real, d_fake, loss, penalty, grads = fused_mlp.critic_step(
                self._fused_layers, real, fake, leaves, self.loss, penalty_terms, self._workspace
            )
        else:
            d_real, d_fake, loss, penalty, grads = self._critic_backward(real, fake, leaves, y)
        distributed.average_gradients(self.critic, self.world)  # no-op on one process
        if not self._finite("critic", self._critic_params, loss=loss, penalty=penalty):
            self.opt_d.zero_grad(set_to_none=True)  # --on-nonfinite skip: drop this update
            self.critic_steps += 1
            return
        stepped = self._scaled_step(self.scaler_d, self.opt_d)  # False: fp16 overflow, skipped
        if stepped and penalty is not None:
            self._track("penalty", penalty)
            self._track("penalty_grad_norm", torch.cat([penalties.grad_norm(g) for g in grads]).mean())
        self.strategy.after_critic_step(self.critic)
        self.critic_steps += 1
        self._track("loss_d", loss)
        self._track("critic_gap", d_real.mean() - d_fake.mean())
        self._last_batch = (real.detach(), fake.detach(), y)

    def _critic_backward(
        self, real: Tensor, fake: Tensor, leaves: dict[str, Tensor], y: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None, list[Tensor]]:
        """The critic's loss and penalty by autograd, and its (scaled) backward into `.grad`.
        Returns D(real), D(fake), the loss, the penalty (None without one) and its input gradients.
        With --cond acgan the critic also learns to classify the real batch (WGAN-GP's
        conditional code: cross-entropy on real images only, weighted by --acgan-scale)."""
        out, pen_out, logits = self._critic_passes(real, fake, leaves, y)
        d_real, d_fake = out["real"], out["fake"]
        loss = self.loss.critic(d_real, d_fake)
        total, penalty, grads = loss, None, []
        if "real" in logits:
            ce = torch.nn.functional.cross_entropy(logits["real"], y)
            self._track("acgan_d", ce)
            total = total + self.cfg.acgan_scale * ce
        if leaves:
            # Input gradients of the scaled output (no-op scale without fp16), then unscaled.
            scaled = torch.autograd.grad(self.scaler_d.scale(pen_out.sum()), list(leaves.values()), create_graph=True)
            inv_scale = 1.0 / self.scaler_d.get_scale()
            grads = [g * inv_scale for g in scaled]
            penalty = self.strategy.penalty(grads)
            total = loss + self.cfg.reg_every * penalty  # weight N keeps the strength as asked
        self.scaler_d.scale(total).backward()
        return d_real, d_fake, loss, penalty, grads

    def _critic_passes(
        self, real: Tensor, fake: Tensor, leaves: dict[str, Tensor], y: Tensor | None = None
    ) -> tuple[dict[str, Tensor], Tensor | None, dict[str, Tensor]]:
        """D on real and fake points, in two forwards when there is a penalty: one over the
        penalised leaves (eager; at interpolates with constant-slope activations, see
        `models.activations`) and one over the other sets (compiled with --compile). Returns
        D per set name, the penalised pass's output, whose input gradients the penalty takes,
        and an AC-GAN critic's class logits per set. `real` and `fake` carry no graph (data,
        and a generator output taken under no_grad); every set shares the labels y."""
        b = self.cfg.batch_size
        plain = [(name, x) for name, x in (("real", real), ("fake", fake)) if name not in leaves]
        out: dict[str, Tensor] = {}
        logits: dict[str, Tensor] = {}
        pen_out = None
        with self.autocast():
            if plain:
                values, classes = self._critique(self._critic_fast, torch.cat([x for _, x in plain]), y, len(plain))
                out.update((name, values[i * b : (i + 1) * b]) for i, (name, _) in enumerate(plain))
                if classes is not None:
                    logits.update((name, classes[i * b : (i + 1) * b]) for i, (name, _) in enumerate(plain))
            if leaves:
                # Constant slopes pay off where the penalised outputs are not in the loss (x_hat):
                # elsewhere the loss's own backward walks that forward graph anyway.
                slope = activations.constant_slope() if "interp" in leaves else contextlib.nullcontext()
                with slope:
                    pen_out, classes = self._critique(self.critic, torch.cat(list(leaves.values())), y, len(leaves))
                out.update((name, pen_out[i * b : (i + 1) * b]) for i, name in enumerate(leaves))
                if classes is not None:
                    logits.update((name, classes[i * b : (i + 1) * b]) for i, name in enumerate(leaves))
        return out, pen_out, logits

    def _critique(self, net: nn.Module, x: Tensor, y: Tensor | None, sets: int = 1) -> tuple[Tensor, Tensor | None]:
        """D(x) (float32), at labels y repeated for `sets` stacked point sets; and an AC-GAN
        critic's class logits."""
        if y is None:
            return net(x).float(), None
        labels = y.repeat(sets)
        if self.cfg.cond == "acgan":
            value, classes = net.forward_all(x, labels)
            return value.float(), classes.float()
        return net(x, labels).float(), None

    @staticmethod
    def _generate(net: nn.Module, z: Tensor, y: Tensor | None) -> Tensor:
        return net(z) if y is None else net(z, y)

    def generator_step(self) -> None:
        """One generator update against the current critic."""
        cfg, b = self.cfg, self.cfg.batch_size
        for p in self._critic_params:  # no critic weight gradients in this backward
            p.requires_grad_(False)
        try:
            y = self.dataset.labels(b, self.rng, self.device) if cfg.conditional else None
            with self.autocast():
                out, classes = self._critique(
                    self._critic_fast, self._generate(self._generator_fast, self.noise(b), y), y
                )
            loss = self.loss.generator(out)
            if classes is not None:  # AC-GAN: the generator makes images the critic classifies as y
                loss = loss + cfg.acgan_scale_g * torch.nn.functional.cross_entropy(classes, y)
            self.opt_g.zero_grad(set_to_none=True)
            self.scaler_g.scale(loss).backward()
            distributed.average_gradients(self.generator, self.world)
            if not self._finite("generator", self._generator_params, loss=loss):
                self.opt_g.zero_grad(set_to_none=True)
                return
            stepped = self._scaled_step(self.scaler_g, self.opt_g)
        finally:
            for p in self._critic_params:
                p.requires_grad_(True)
        if stepped:
            self._track("loss_g", loss)

    def _finite(self, net: str, params: tuple[nn.Parameter, ...], **values: Tensor | None) -> bool:
        """Whether this step's losses, penalty and gradients are all finite. With fp16 the
        gradient scaler owns overflowing gradients, and so the penalty, which is formed from
        them (it skips those steps and lowers its scale), so only the losses are checked.
        A non-finite value raises `NonFinite` naming it, or with --on-nonfinite skip returns
        False so the caller drops the update (counted as `nonfinite_skipped`)."""
        scaled = self.scaler_d.is_enabled()
        checked = {
            f"{net} {name}": v for name, v in values.items() if v is not None and not (scaled and name == "penalty")
        }
        grads = [] if scaled else [p.grad for p in params if p.grad is not None]
        # The scalars and one norm per gradient tensor, stacked (float32 parameters, so float32
        # norms): one device sync per step, and the float64 sum is finite exactly when every part is.
        parts = torch.stack(
            [v.detach().float().reshape(()) for v in checked.values()]
            + (list(torch._foreach_norm(grads)) if grads else [])
        )
        if distributed.all_ok(math.isfinite(float(parts.double().sum())), self.world):  # ranks agree
            return True
        finite = [math.isfinite(v) for v in parts.tolist()]
        bad = next((name for name, ok in zip(checked, finite) if not ok), None)
        if bad is None:
            bad = f"{net} gradient" if not all(finite) else f"{net} on another rank"
        if self.cfg.on_nonfinite == "skip":
            self.nonfinite_skipped += 1
            return False
        raise NonFinite(self.step + 1, bad)

    def _scaled_step(self, scaler: torch.amp.GradScaler, opt: torch.optim.Optimizer) -> bool:
        """Step through the scaler; False when fp16 gradients overflowed and the step was
        skipped (counted as `amp_skipped`)."""
        if not scaler.is_enabled():
            opt.step()
            return True
        before = scaler.get_scale()
        scaler.step(opt)
        scaler.update()
        if scaler.get_scale() < before:
            self.amp_skipped += 1
            return False
        return True

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema is None:
            return
        t = self.step
        decay = min(self.cfg.ema_decay, (1.0 + t) / (10.0 + t))  # warm-up: early weights fade
        for e, p in zip(self.ema.parameters(), self.generator.parameters()):
            e.lerp_(p, 1.0 - decay)
        for e, b in zip(self.ema.buffers(), self.generator.buffers()):
            e.copy_(b)

    # --- reporting ---------------------------------------------------------------------
    def _track(self, name: str, value: Tensor) -> None:
        value = value.detach()
        self._sums[name] = self._sums[name] + value if name in self._sums else value
        self._counts[name] = self._counts.get(name, 0) + 1

    def pop_stats(self) -> dict[str, float]:
        """Means of the tracked scalars since the last call, plus the mean input-gradient norm
        at interpolates of the last critic batch (the same measure for every method)."""
        stats = {k: float(v) / self._counts[k] for k, v in self._sums.items()}
        self._sums, self._counts = {}, {}
        if "critic_gap" in stats:
            stats.update(gap_stats(stats["critic_gap"], self.cfg.loss))
        if self.cfg.on_nonfinite == "skip":
            stats["nonfinite_skipped"] = self.nonfinite_skipped
        if self.scaler_d.is_enabled():
            stats["amp_skipped"] = self.amp_skipped
            stats["amp_scale"] = self.scaler_d.get_scale()
        if self._last_batch is not None:
            real, fake, y = self._last_batch
            eval_rng = self.eval_generator(offset=self.step)  # `streams`: the step as offset
            x_hat = penalties.interpolate(real, fake, eval_rng)
            with eval_mode(self.critic):
                _, grads = penalties.input_grads(self.critic, x_hat, y=y)
            stats["grad_norm"] = float(penalties.grad_norm(grads).mean())
        return stats

    # --- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything a bitwise-exact resume needs: config, weights, optimizer and scaler
        states, counters and the random stream (tensors as they are; the checkpoint copies them
        to the CPU)."""
        scaled = self.scaler_d.is_enabled()
        return {
            "config": self.cfg,
            "generator": self.generator.state_dict(),
            "critic": self.critic.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optim_g": self.opt_g.state_dict(),
            "optim_d": self.opt_d.state_dict(),
            "step": self.step,
            "critic_steps": self.critic_steps,
            "rng": self.rng.get_state(),
            "rng_device": self.device.type,
            "class_names": list(self.class_names) if self.class_names is not None else None,
            "scalers": {"d": self.scaler_d.state_dict(), "g": self.scaler_g.state_dict(), "skipped": self.amp_skipped}
            if scaled
            else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load a state from `state_dict()` or `ganctl.nets.checkpoint.read_state`, strictly; raises
        `CheckpointError` naming what does not fit. A random stream saved on another device
        type cannot be restored: the run then continues on a stream derived from (seed, step,
        rank) and `exact_resume` is False."""
        checkpoint.load_networks(self, state)
        if state.get("class_names"):
            self.class_names = tuple(state["class_names"])
        self._load_optimizer("optim_g", self.opt_g, state["optim_g"])
        self._load_optimizer("optim_d", self.opt_d, state["optim_d"])
        self.step, self.critic_steps = int(state["step"]), int(state["critic_steps"])
        scalers = state.get("scalers")
        if self.scaler_d.is_enabled() and scalers is not None:
            try:
                self.scaler_d.load_state_dict(scalers["d"])
                self.scaler_g.load_state_dict(scalers["g"])
                self.amp_skipped = int(scalers["skipped"])
            except (ValueError, KeyError, TypeError, RuntimeError) as exc:
                raise CheckpointError(f"metadata 'amp_scalers' is malformed ({exc})") from None
        rank, rng_state = self.world.rank, state["rng"]
        exact = state.get("rng_device") == self.device.type
        if rank > 0:  # a torchrun rank: its own stream when the checkpoint has it
            own = state.get("rank_rngs", {}).get(rank)
            if own is not None and state.get("world_size") == self.world.size:
                rng_state = own
            else:
                exact = False
        self.exact_resume = exact
        if exact:
            try:
                self.rng.set_state(rng_state)
            except (RuntimeError, TypeError) as exc:
                raise CheckpointError(f"rng.train is not a valid generator state ({exc})") from None
        else:
            self.rng.manual_seed(streams.resume_seed(self.cfg.seed, self.step, rank))

    def _load_optimizer(self, name: str, opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        try:
            groups = [dict(g) for g in state["param_groups"]]
            for group, current in zip(groups, opt.param_groups):
                # How the update is computed (fused, foreach) belongs to this machine, not to the file.
                group.update((key, current[key]) for key in OPTIMIZER_IMPLEMENTATION_FLAGS if key in current)
            # Copies: torch's load keeps the given tensors, which an in-memory state shares with its source.
            entries = {
                i: {k: v.clone() if torch.is_tensor(v) else v for k, v in e.items()} for i, e in state["state"].items()
            }
            opt.load_state_dict({"state": entries, "param_groups": groups})
        except (ValueError, KeyError, TypeError, RuntimeError, AttributeError) as exc:
            raise CheckpointError(f"{name} state does not fit its model ({exc})") from None

    def roll_back(self, state: dict[str, Any], attempt: int) -> None:
        """Reload an earlier state (weights, optimizers, counters), then continue on a fresh
        random stream, so the same batches do not lead to the same non-finite value again."""
        self.load_state_dict(state)
        self.rng.manual_seed(streams.rollback_seed(self.cfg.seed, self.step, self.world.rank, attempt))
        self.exact_resume = False


def resume(
    path: str | Path,
    overrides: dict[str, Any] | None = None,
    device: str | None = None,
    world: distributed.World | None = None,
) -> Trainer:
    """A trainer rebuilt from a checkpoint file (or a run folder's latest), ready to continue.
    `overrides` may change schedule settings only (`ganctl.config.SCHEDULE_FIELDS`).

    A run folder whose newest checkpoint cannot be read resumes from the newest one that can,
    and the trainer's `notes` name what was skipped; a checkpoint file given by name is read
    strictly."""
    path, (state, config), skipped = checkpoint.newest(path, checkpoint.read_state)
    overrides = dict(overrides or {})
    if device is not None:
        overrides["device"] = device
    changed = {k: v for k, v in overrides.items() if getattr(config, k) != v}
    fixed = sorted(k for k in changed if k not in SCHEDULE_FIELDS)
    if fixed:
        detail = ", ".join(f"{flag_of(k)} (checkpoint has {getattr(config, k)!r})" for k in fixed)
        raise ConfigError(
            f"cannot change {detail} when resuming {path}; only {', '.join(sorted(SCHEDULE_FIELDS))} may change"
        )
    try:
        cfg = resolve(config.replace(**changed))
    except GanctlError as exc:
        raise CheckpointError(f"{path}: its config cannot be built ({exc})") from None
    checkpoint.check_size(path, cfg, state)
    try:
        trainer = Trainer(cfg, load_data=False, world=world)
    except GanctlError as exc:
        raise CheckpointError(f"{path}: its config cannot be built ({exc})") from None
    try:
        trainer.load_state_dict(state)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    trainer.notes += [f"skipped an unreadable checkpoint, {reason}; resuming from {path}" for reason in skipped]
    return trainer
