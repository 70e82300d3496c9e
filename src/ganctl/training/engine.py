"""The training step. The engine owns the order of zero_grad, backward and step for both
networks; it reports numbers and never prints or writes files.

A `Trainer` holds a `ganctl.nets.networks.Networks` (its generator, EMA and critic), their
optimizers, a `Guard` (mixed precision, non-finite values), a `Stats` and one random stream;
`ganctl.training.state` takes its state out and puts it back.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor, nn

from ganctl import streams
from ganctl.config import ResolvedConfig, TrainConfig
from ganctl.data import load_dataset
from ganctl.devices import resolve_device
from ganctl.errors import ConfigError
from ganctl.methods import penalties
from ganctl.methods.losses import get_loss
from ganctl.methods.strategies import Lipschitz, build_strategy
from ganctl.models import activations
from ganctl.nets.augment import Ada
from ganctl.nets.networks import Networks, build, eval_mode
from ganctl.training import distributed, fused_mlp, preflight, schedule
from ganctl.training.guard import Guard
from ganctl.training.schedule import LrSchedule
from ganctl.training.stats import Stats


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


class Trainer:
    """A generator, a critic kept Lipschitz by a strategy, their optimizers, an optional EMA of
    the generator, and one random stream for data, latents and interpolation. The networks are
    a `Networks` (`nets`, what sampling and evaluation read); the numerical guard (mixed
    precision, non-finite values) is a `Guard`, the reported scalars a `Stats`, and the state
    goes out and comes back through `ganctl.training.state`.

    `fused` chooses how a penalised critic step of a plain ReLU / LeakyReLU MLP critic runs:
    None (the default) takes the hand-written step of `ganctl.training.fused_mlp` wherever it
    applies (CPU and CUDA, no autocast), False always takes autograd, True requires the
    hand-written step and refuses a critic it does not cover. Both give the same numbers up to
    rounding.

    `config` is resolved (`ganctl.methods.resolve.resolve`) once, where a run enters ganctl."""

    def __init__(
        self,
        config: ResolvedConfig,
        device: torch.device | str | None = None,
        load_data: bool = True,
        world: distributed.World | None = None,
        fused: bool | None = None,
    ):
        if not isinstance(config, ResolvedConfig):
            raise ConfigError("Trainer takes a resolved config: Trainer(ganctl.methods.resolve.resolve(config))")
        device = torch.device(device) if device is not None else resolve_device(config.device)
        self.world = world if world is not None else distributed.current()
        if self.world.active and device.type == "cuda" and device.index is None:
            device = torch.device("cuda", self.world.local_rank)  # one GPU per rank
        self.nets, self.strategy = _networks(config, device, load_data)
        self.memory_format = memory_format(self.cfg, device)  # the real batches' layout, as the networks'
        self.loss = get_loss(self.cfg.loss)
        modules = [m for m in (self.generator, self.critic, self.ema) if m is not None]
        distributed.broadcast_modules(modules, self.world)
        self.notes: list[str] = []  # said once at the start of a run
        self.guard = Guard(self.cfg, device, self.world)
        self.stats = Stats()
        self._build_step(fused)
        self.rng = torch.Generator(device=device)
        self.rng.manual_seed(streams.rank_seed(self.cfg.seed, self.world.rank))  # rank 0: the seed itself
        self.critic_steps = 0
        self.exact_resume = True  # False after resuming another device type's random stream

    # --- the networks, as `nets` holds them: cfg, device, generator, critic, ema, dataset, step
    cfg = property(lambda self: self.nets.cfg)
    device = property(lambda self: self.nets.device)
    generator = property(lambda self: self.nets.generator)
    critic = property(lambda self: self.nets.critic)
    ema = property(lambda self: self.nets.ema)
    dataset = property(lambda self: self.nets.dataset)
    step = property(lambda self: self.nets.step, lambda self, value: setattr(self.nets, "step", value))
    augment = property(lambda self: self.nets.augment)  # what the critic sees (`nets.augment.Augmenter`)

    @property
    def ada(self) -> Ada | None:
        """ADA's controller, where --ada-target adapts the augmentation's probability."""
        return self.augment.ada

    def _augmented(self, x: Tensor) -> Tensor:
        """x as the critic sees it, augmented with the trainer's stream where --augment is set.
        Every input gradient (the penalties', gradnorm's) is taken through this, with respect to
        the un-augmented x (stylegan2-ada's convention; docs/results.md)."""
        return self.augment(x, self.rng)

    def _build_step(self, fused: bool | None) -> None:
        """Optimizers, gradient scalers, compiled forwards and the penalised step's path."""
        cfg = self.cfg
        # Parameter lists, walked every step (module.parameters() re-walks the module tree).
        self._generator_params = tuple(self.generator.parameters())
        self._critic_params = tuple(self.critic.parameters())
        self.opt_g = make_optimizer(cfg, self._generator_params, cfg.lr_g)
        self.opt_d = make_optimizer(cfg, self._critic_params, cfg.lr_d)
        self.schedule = LrSchedule(cfg, {self.opt_g: cfg.lr_g, self.opt_d: cfg.lr_d})
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
        plain = self.guard.amp_dtype is None and self.augment.augment is None and self.device.type in ("cpu", "cuda")
        if penalised and fused is not False and plain:
            self._fused_layers = fused_mlp.layers_of(self.critic)
        if fused and self._fused_layers is None:
            raise ConfigError(
                "fused=True: the hand-written step needs a penalised plain ReLU/LeakyReLU MLP critic"
                " on CPU or CUDA without --amp or --augment"
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

    # --- one iteration ---------------------------------------------------------------
    def train_step(self) -> None:
        """n_critic critic steps, then one generator step and the EMA update."""
        self.schedule.apply(self.step)
        if self.strategy.weight is not None:
            self.strategy.weight = schedule.gamma(self.cfg, self.step)
        with self.guard.precision():
            for _ in range(self.cfg.n_critic):
                with self.strategy.step_context():
                    self.critic_step()
            with self.strategy.step_context():
                self.generator_step()
        self.step += 1
        self._update_ema()

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
        with torch.no_grad(), self.guard.autocast():
            fake = self.nets.generate(self._generator_fast, self.nets.noise(b, self.rng), y).float()
        at = self.strategy.penalty_at
        if at is not None and self.critic_steps % cfg.reg_every != 0:
            at = None  # lazy regularisation: no penalty on this step
        leaves = penalties.penalty_points(at, real, fake, self.rng)
        _clear(self._critic_params)
        if leaves and self._fused_layers is not None:
            penalty_terms = fused_mlp.Penalty(self.strategy.penalty, self.strategy.penalty_grads, cfg.reg_every)
            d_real, d_fake, loss, penalty, grads = fused_mlp.critic_step(
                self._fused_layers, real, fake, leaves, self.loss, penalty_terms, self._workspace
            )
        else:
            d_real, d_fake, loss, penalty, grads = self._critic_backward(real, fake, leaves, y)
        distributed.average_gradients(self.critic, self.world)  # no-op on one process
        if not self.guard.finite(self.step, "critic", self._critic_params, loss=loss, penalty=penalty):
            _clear(self._critic_params)  # --on-nonfinite skip: drop this update
            self.critic_steps += 1
            return
        stepped = self.guard.step(self.guard.scaler_d, self.opt_d)  # False: fp16 overflow, skipped
        if stepped and penalty is not None:
            self.stats.track("penalty", penalty)
            self.stats.track("penalty_grad_norm", torch.cat([penalties.grad_norm(g) for g in grads]).mean())
        self.strategy.after_critic_step(self.critic)
        self.critic_steps += 1
        _adapt(self, d_real, d_fake)
        self.stats.track("loss_d", loss)
        self.stats.track("critic_gap", d_real.mean() - d_fake.mean())
        self.stats.last_batch = (real.detach(), fake.detach(), y)

    def _critic_backward(
        self, real: Tensor, fake: Tensor, leaves: dict[str, Tensor], y: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None, list[Tensor]]:
        """The critic's loss and penalty by autograd, and its (scaled) backward into `.grad`.
        Returns D(real), D(fake), the loss, the penalty (None without one) and its input gradients.
        With --cond acgan the critic also learns to classify the real batch (WGAN-GP's
        conditional code: cross-entropy on real images only, weighted by --acgan-scale)."""
        out, pen_out, logits = _critic_passes(self, real, fake, leaves, y)
        d_real, d_fake = out["real"], out["fake"]
        loss = self.loss.critic(d_real, d_fake)
        total, penalty, grads = loss, None, []
        if "real" in logits:
            ce = torch.nn.functional.cross_entropy(logits["real"], y)
            self.stats.track("acgan_d", ce)
            total = total + self.cfg.acgan_scale * ce
        if leaves:
            # Input gradients of the scaled output (no-op scale without fp16), then unscaled.
            scaled = torch.autograd.grad(
                self.guard.scaler_d.scale(pen_out.sum()), list(leaves.values()), create_graph=True
            )
            inv_scale = 1.0 / self.guard.scaler_d.get_scale()
            grads = [g * inv_scale for g in scaled]
            penalty = self.strategy.penalty(grads)
            total = loss + self.cfg.reg_every * penalty  # weight N keeps the strength as asked
        self.guard.scaler_d.scale(total).backward()
        return d_real, d_fake, loss, penalty, grads

    def generator_step(self) -> None:
        """One generator update against the current critic."""
        cfg, b = self.cfg, self.cfg.batch_size
        for p in self._critic_params:  # no critic weight gradients in this backward
            p.requires_grad_(False)
        try:
            real, y = None, None
            if self.loss.pairs:  # relativistic: each fake is judged against a real of its batch
                real, y = self.dataset.sample_labelled(b, self.rng, self.device) if cfg.conditional else (None, None)
                real = self.dataset.sample(b, self.rng, self.device) if real is None else real
            elif cfg.conditional:
                y = self.dataset.labels(b, self.rng, self.device)
            with self.guard.autocast():
                fake = self.nets.generate(self._generator_fast, self.nets.noise(b, self.rng), y)
                out, classes = critique(self._critic_fast, self._augmented(fake), y, cond=cfg.cond)
                d_real = (
                    None if real is None else critique(self._critic_fast, self._augmented(real), y, cond=cfg.cond)[0]
                )
            loss = self.loss.generator(out, d_real)
            if classes is not None:  # AC-GAN: the generator makes images the critic classifies as y
                loss = loss + cfg.acgan_scale_g * torch.nn.functional.cross_entropy(classes, y)
            _clear(self._generator_params)
            self.guard.scaler_g.scale(loss).backward()
            distributed.average_gradients(self.generator, self.world)
            if not self.guard.finite(self.step, "generator", self._generator_params, loss=loss):
                _clear(self._generator_params)
                return
            stepped = self.guard.step(self.guard.scaler_g, self.opt_g)
        finally:
            for p in self._critic_params:
                p.requires_grad_(True)
        if stepped:
            self.stats.track("loss_g", loss)

    def _update_ema(self) -> None:
        if self.ema is not None:
            schedule.update_ema(
                self.ema, self.generator, schedule.ema_beta(self.cfg, self.step, self.cfg.batch_size * self.world.size)
            )

    def pop_stats(self) -> dict[str, float]:
        """The training scalars since the last call (`Stats.pop`) and the guard's counters."""
        return {**self.stats.pop(self.nets), **self.guard.stats()}


def _clear(params: tuple[nn.Parameter, ...]) -> None:
    """zero_grad(set_to_none=True) without the optimizer's wrapper (a sixth of a 2-D step's
    Python time): every parameter the optimizer holds is one of these."""
    for p in params:
        p.grad = None


def _adapt(trainer: Trainer, d_real: Tensor, d_fake: Tensor) -> None:
    """ADA: the loss's overfitting signs, or the validation heuristic's outputs, of every process
    move the one probability."""
    ada = trainer.ada
    if ada is not None:
        reduce = lambda sums: distributed.sum_over_ranks(sums, trainer.world)  # noqa: E731
        if ada.heuristic == "validation":
            ada.observe_outputs(d_real.detach(), d_fake.detach(), lambda: _validation_outputs(trainer), reduce)
        else:
            ada.observe(trainer.loss.overfit_sign(d_real.detach(), d_fake.detach()), reduce)
        if ada.last is not None:
            trainer.stats.track("ada_heuristic", torch.tensor(ada.last))
    if trainer.augment.augment is not None:
        trainer.stats.track("augment_p", torch.tensor(trainer.augment.p))


@torch.no_grad()
def _validation_outputs(trainer: Trainer) -> Tensor:
    """The critic's outputs on a batch of held-out images (--holdout), drawn from the training
    stream and augmented as the training batch is: ADA's validation heuristic reads them."""
    held, b, critic = trainer.dataset.held_out, trainer.cfg.batch_size, trainer.critic
    with eval_mode(critic):  # no power-iteration or running-statistics update from unseen images
        if trainer.cfg.conditional:
            x, y = held.sample_labelled(b, trainer.rng, trainer.device)
            return critic(trainer._augmented(x), y)
        return critic(trainer._augmented(held.sample(b, trainer.rng, trainer.device)))


def _critic_passes(
    self: Trainer, real: Tensor, fake: Tensor, leaves: dict[str, Tensor], y: Tensor | None = None
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
    with self.guard.autocast():
        if plain:
            values, classes = critique(
                self._critic_fast, self._augmented(torch.cat([x for _, x in plain])), y, len(plain), self.cfg.cond
            )
            out.update((name, values[i * b : (i + 1) * b]) for i, (name, _) in enumerate(plain))
            if classes is not None:
                logits.update((name, classes[i * b : (i + 1) * b]) for i, (name, _) in enumerate(plain))
        if leaves:
            # Constant slopes pay off where the penalised outputs are not in the loss (x_hat):
            # elsewhere the loss's own backward walks that forward graph anyway.
            slope = activations.constant_slope() if "interp" in leaves else contextlib.nullcontext()
            with slope:
                pen_out, classes = critique(
                    self.critic, self._augmented(torch.cat(list(leaves.values()))), y, len(leaves), self.cfg.cond
                )
            out.update((name, pen_out[i * b : (i + 1) * b]) for i, name in enumerate(leaves))
            if classes is not None:
                logits.update((name, classes[i * b : (i + 1) * b]) for i, name in enumerate(leaves))
    return out, pen_out, logits


def _networks(cfg: ResolvedConfig, device: torch.device, load_data: bool) -> tuple[Networks, Lipschitz]:
    """The run's networks on `device`. A fresh run reads its data now (errors before any work)
    and records the image size, channels and classes it found, so the checkpoint rebuilds
    without the data; a resumed one reads the data when first sampled."""
    dataset = load_dataset(cfg) if load_data else None
    if dataset is not None and dataset.kind == "images":
        c, size, _ = dataset.shape
        cfg = cfg.replace(image_size=size, channels=c)
    if dataset is not None and cfg.conditional:  # the data says how many classes, and their names
        cfg = cfg.replace(num_classes=dataset.classes.count)
    preflight.check(cfg, device)  # sizes that cannot fit are refused before anything is allocated
    strategy = build_strategy(cfg)
    generator, critic, ema = build(cfg, strategy)
    layout = memory_format(cfg, device)
    generator, ema = (m.to(device, memory_format=layout) if m is not None else None for m in (generator, ema))
    critic = critic.to(device, memory_format=layout if strategy.channels_last else torch.contiguous_format)
    names = dataset.classes.names if dataset is not None and cfg.conditional else None
    return Networks(cfg, device, generator, critic, ema, dataset=dataset, class_names=names), strategy


def memory_format(cfg: TrainConfig, device: torch.device) -> torch.memory_format:
    """Channels-last convolutions on CUDA (the layout tensor cores read) and on a CPU (oneDNN's
    convolutions in it made a 32 px DCGAN step 1.09x faster, docs/benchmarks.md), else contiguous."""
    convolutional = cfg.arch in ("dcgan", "resnet", "r3gan") and device.type in ("cuda", "cpu")
    return torch.channels_last if convolutional else torch.contiguous_format


def critique(
    net: nn.Module, x: Tensor, y: Tensor | None, sets: int = 1, cond: str | None = None
) -> tuple[Tensor, Tensor | None]:
    """D(x) (float32), at labels y repeated for `sets` stacked point sets; and an AC-GAN
    critic's class logits (`cond` acgan)."""
    if y is None:
        return net(x).float(), None
    labels = y.repeat(sets)
    if cond == "acgan":
        value, classes = net.forward_all(x, labels)
        return value.float(), classes.float()
    return net(x, labels).float(), None
