"""The training step and its state. The engine owns the order of zero_grad, backward and
step for both networks; it reports numbers and never prints or writes files."""

from __future__ import annotations

import contextlib
import copy
import math
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from ganctl import distributed, fused_mlp, penalties
from ganctl.config import TrainConfig, resolve
from ganctl.data import load_dataset, sample_shape
from ganctl.devices import resolve_device
from ganctl.errors import NonFinite
from ganctl.lipschitz import build_strategy
from ganctl.losses import get_loss
from ganctl.models import activations, build_models

EVAL_SEED_OFFSET = 1_000_003  # evaluation noise never draws from the training stream
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def make_optimizer(
    cfg: TrainConfig, params: Any, lr: float, lazy_interval: int = 1
) -> torch.optim.Optimizer:
    """Adam (fused where torch has the kernel, else foreach) or RMSprop (foreach). With a
    penalty applied every N steps, lr and Adam's betas are corrected by c = N / (N + 1)
    (lr * c, beta ** c), as in StyleGAN2's lazy regularisation."""
    c = lazy_interval / (lazy_interval + 1) if lazy_interval > 1 else 1.0
    params = list(params)
    if cfg.optimizer == "adam":
        betas = (cfg.beta1**c, cfg.beta2**c)
        try:  # one fused kernel per step where torch has it for this device
            return torch.optim.Adam(params, lr=lr * c, betas=betas, fused=True)
        except RuntimeError:
            return torch.optim.Adam(params, lr=lr * c, betas=betas, foreach=True)
    return torch.optim.RMSprop(params, lr=lr * c, foreach=True)


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Evaluation mode for a measurement (spectral norm then runs no power iteration, batch
    norm uses running statistics), restoring the module's mode afterwards."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


class Trainer:
    """A generator, a critic kept Lipschitz by a strategy, their optimizers, an optional EMA
    of the generator, and one random stream for data, latents and interpolation."""

    def __init__(self, config: TrainConfig, device: torch.device | str | None = None, load_data: bool = True,
                 world: distributed.World | None = None):
        cfg = resolve(config)
        self.device = torch.device(device) if device is not None else resolve_device(cfg.device)
        self.world = world if world is not None else distributed.current()
        if self.world.active and self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", self.world.local_rank)  # one GPU per rank
        self._dataset = None
        if load_data:
            # A fresh run reads its data now (errors before any work) and records the image
            # size and channels it found, so the checkpoint rebuilds without the data.
            self._dataset = load_dataset(cfg)
            if self._dataset.kind == "images":
                c, size, _ = self._dataset.shape
                cfg = cfg.replace(image_size=size, channels=c)
        self.cfg = cfg
        self.strategy = build_strategy(cfg)
        self.loss = get_loss(cfg.loss)

        # Initialise on the CPU from the seed alone, so the same seed gives the same weights on
        # any device and the caller's global RNG is left untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            generator, critic = build_models(cfg, sample_shape(cfg))
            critic = self.strategy.prepare_critic(critic)
        # CUDA: TF32 as asked, and channels-last convolutions (the layout tensor cores read).
        self.memory_format = torch.contiguous_format
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
            torch.backends.cudnn.allow_tf32 = cfg.tf32
            if cfg.arch in ("dcgan", "resnet"):
                self.memory_format = torch.channels_last
        self.generator = generator.to(self.device, memory_format=self.memory_format)
        self.critic = critic.to(self.device, memory_format=self.memory_format)
        distributed.broadcast_modules((self.generator, self.critic), self.world)
        self.ema = None
        if cfg.ema_decay > 0:
            self.ema = copy.deepcopy(self.generator).requires_grad_(False).eval()

        # --compile: compiled forwards wherever one backward follows; torch.compile does not
        # support the double backward of a penalty, so penalised critic passes stay eager.
        self.notes: list[str] = []
        self._generator_fast, self._critic_fast = self.generator, self.critic
        if cfg.compile:
            self._generator_fast = torch.compile(self.generator)
            self._critic_fast = torch.compile(self.critic)

        # Parameter lists, walked every step (module.parameters() re-walks the module tree).
        self._generator_params = tuple(self.generator.parameters())
        self._critic_params = tuple(self.critic.parameters())
        lazy = cfg.reg_every if self.strategy.penalty_at is not None else 1
        self.opt_g = make_optimizer(cfg, self._generator_params, cfg.lr_g)
        self.opt_d = make_optimizer(cfg, self._critic_params, cfg.lr_d, lazy)
        # Mixed precision: autocast for forwards; with fp16, a gradient scaler per optimizer and
        # the penalty's input gradients taken from the scaled output, then unscaled (PyTorch's
        # AMP recipe for gradient penalties). bf16 needs no scaler (enabled=False: no-ops).
        self.amp_dtype = AMP_DTYPES.get(cfg.amp)
        self.scaler_d = torch.amp.GradScaler(self.device.type, enabled=cfg.amp == "fp16")
        self.scaler_g = torch.amp.GradScaler(self.device.type, enabled=cfg.amp == "fp16")
        # A plain ReLU / LeakyReLU MLP critic takes its penalised steps through the hand-written
        # backward of `fused_mlp` (same numbers, a fraction of autograd's operators); anything
        # else, any autocast step, and MPS (where its out= kernels are untried) use autograd.
        self._fused_layers, self._workspace = None, {}
        if self.strategy.penalty_at is not None and self.amp_dtype is None and self.device.type in ("cpu", "cuda"):
            self._fused_layers = fused_mlp.layers_of(self.critic)
        if cfg.compile and self.strategy.penalty_at is not None:
            penalised = ("run ganctl's hand-written MLP step, eagerly" if self._fused_layers is not None else
                         "run eagerly (torch.compile does not support the penalty's double backward)")
            self.notes.append(f"--compile: the penalised critic steps {penalised}; the generator and the other"
                              " critic passes are compiled")
        self._base_lr_g = self.opt_g.param_groups[0]["lr"]  # after the lazy-reg correction
        self._base_lr_d = self.opt_d.param_groups[0]["lr"]

        self.rng = torch.Generator(device=self.device)
        self.rng.manual_seed(distributed.rank_seed(cfg.seed, self.world.rank))  # rank 0: the seed itself
        self.step = 0  # generator iterations done
        self.critic_steps = 0
        self.amp_skipped = 0  # fp16 steps the gradient scaler skipped after an overflow
        self.nonfinite_skipped = 0  # updates dropped by --on-nonfinite skip
        self._sums: dict[str, Tensor] = {}
        self._counts: dict[str, int] = {}
        self._last_batch: tuple[Tensor, Tensor] | None = None
        self.exact_resume = True  # False after resuming another device type's RNG state

    @property
    def dataset(self) -> Any:
        """The data source, read on first use (loading a checkpoint to sample needs no data)."""
        if self._dataset is None:
            self._dataset = load_dataset(self.cfg)
        if getattr(self._dataset, "to", None) is not None and not getattr(self, "_data_placed", False):
            self._dataset.to(self.device)
            self._data_placed = True
        return self._dataset

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
        for _ in range(self.cfg.n_critic):
            self._critic_step()
        self._generator_step()
        self.step += 1
        self._update_ema()

    def _critic_step(self) -> None:
        cfg, b = self.cfg, self.cfg.batch_size
        real = self.dataset.sample(b, self.rng, self.device)
        if real.dim() == 4:
            real = real.contiguous(memory_format=self.memory_format)
        with torch.no_grad(), self.autocast():
            fake = self._generator_fast(self.noise(b)).float()
        at = self.strategy.penalty_at
        if at is not None and self.critic_steps % cfg.reg_every != 0:
            at = None  # lazy regularisation: no penalty on this step
        leaves = penalties.penalty_points(at, real, fake, self.rng)
        self.opt_d.zero_grad(set_to_none=True)
        if leaves and self._fused_layers is not None:
            d_real, d_fake, loss, penalty, grads = fused_mlp.critic_step(
                self._fused_layers, real, fake, leaves, self.loss, self.strategy.penalty, self.strategy.penalty_grads,
                cfg.reg_every, self._workspace)
        else:
            d_real, d_fake, loss, penalty, grads = self._critic_backward(real, fake, leaves)
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
        self._track("wasserstein", d_real.mean() - d_fake.mean())
        self._last_batch = (real.detach(), fake.detach())

    def _critic_backward(self, real: Tensor, fake: Tensor, leaves: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor | None, list[Tensor]]:
        """The critic's loss and penalty by autograd, and its (scaled) backward into `.grad`.
        Returns D(real), D(fake), the loss, the penalty (None without one) and its input gradients."""
        out, pen_out = self._critic_passes(real, fake, leaves)
        d_real, d_fake = out["real"], out["fake"]
        loss = self.loss.critic(d_real, d_fake)
        total, penalty, grads = loss, None, []
        if leaves:
            # Input gradients of the scaled output (no-op scale without fp16), then unscaled.
            scaled = torch.autograd.grad(self.scaler_d.scale(pen_out.sum()), list(leaves.values()), create_graph=True)
            inv_scale = 1.0 / self.scaler_d.get_scale()
            grads = [g * inv_scale for g in scaled]
            penalty = self.strategy.penalty(grads)
            total = loss + self.cfg.reg_every * penalty  # weight N keeps the strength as asked
        self.scaler_d.scale(total).backward()
        return d_real, d_fake, loss, penalty, grads

    def _critic_passes(self, real: Tensor, fake: Tensor, leaves: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor | None]:
        """D on real and fake points, in two forwards when there is a penalty: one over the
        penalised leaves (eager; at interpolates with constant-slope activations, see
        `models.activations`) and one over the other sets (compiled with --compile). Returns
        D per set name and the penalised pass's output, whose input gradients the penalty takes.
        `real` and `fake` carry no graph (data, and a generator output taken under no_grad)."""
        b = self.cfg.batch_size
        plain = [(name, x) for name, x in (("real", real), ("fake", fake)) if name not in leaves]
        out: dict[str, Tensor] = {}
        pen_out = None
        with self.autocast():
            if plain:
                values = self._critic_fast(torch.cat([x for _, x in plain])).float()
                out.update((name, values[i * b : (i + 1) * b]) for i, (name, _) in enumerate(plain))
            if leaves:
                # Constant slopes pay off where the penalised outputs are not in the loss (x_hat):
                # elsewhere the loss's own backward walks that forward graph anyway.
                slope = activations.constant_slope() if "interp" in leaves else contextlib.nullcontext()
                with slope:
                    pen_out = self.critic(torch.cat(list(leaves.values()))).float()
                out.update((name, pen_out[i * b : (i + 1) * b]) for i, name in enumerate(leaves))
        return out, pen_out

    def _generator_step(self) -> None:
        for p in self._critic_params:  # no critic weight gradients in this backward
            p.requires_grad_(False)
        try:
            with self.autocast():
                out = self._critic_fast(self._generator_fast(self.noise(self.cfg.batch_size))).float()
            loss = self.loss.generator(out)
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
        checked = {f"{net} {name}": v for name, v in values.items() if v is not None and not (scaled and name == "penalty")}
        grads = [] if scaled else [p.grad for p in params if p.grad is not None]
        # The scalars and one norm per gradient tensor, stacked (float32 parameters, so float32
        # norms): one device sync per step, and the float64 sum is finite exactly when every part is.
        parts = torch.stack([v.detach().float().reshape(()) for v in checked.values()] + (list(torch._foreach_norm(grads)) if grads else []))
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
        if self.cfg.on_nonfinite == "skip":
            stats["nonfinite_skipped"] = self.nonfinite_skipped
        if self.scaler_d.is_enabled():
            stats["amp_skipped"] = self.amp_skipped
            stats["amp_scale"] = self.scaler_d.get_scale()
        if self._last_batch is not None:
            real, fake = self._last_batch
            eval_rng = self.eval_generator(offset=self.step)
            x_hat = penalties.interpolate(real, fake, eval_rng)
            with eval_mode(self.critic):
                _, grads = penalties.input_grads(self.critic, x_hat)
            stats["grad_norm"] = float(penalties.grad_norm(grads).mean())
        return stats

    def eval_generator(self, offset: int = 0) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed(self.cfg.seed + EVAL_SEED_OFFSET + offset)
        return g

    @property
    def sampler(self) -> nn.Module:
        """The generator used for samples and evaluation: the EMA one when there is one."""
        return self.ema if self.ema is not None else self.generator

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, raw: bool = False) -> Tensor:
        net = self.generator if raw else self.sampler
        with eval_mode(net):
            return net(self.noise(n, generator))

    @torch.no_grad()
    def critic_values(self, x: Tensor) -> Tensor:
        """D(x) in eval mode: spectral norm runs no power iteration, so this changes nothing."""
        with eval_mode(self.critic):
            return self.critic(x).squeeze(-1)
