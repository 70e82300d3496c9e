"""The training step and its state. The engine owns the order of zero_grad, backward and
step for both networks; it reports numbers and never prints or writes files."""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from ganctl import penalties
from ganctl.config import TrainConfig, resolve
from ganctl.data import get_dataset
from ganctl.devices import resolve_device
from ganctl.lipschitz import build_strategy
from ganctl.losses import get_loss
from ganctl.models import build_models

EVAL_SEED_OFFSET = 1_000_003  # evaluation noise never draws from the training stream


def make_optimizer(
    cfg: TrainConfig, params: Any, lr: float, lazy_interval: int = 1
) -> torch.optim.Optimizer:
    """Adam or RMSprop. With a penalty applied every N steps, lr and Adam's betas are
    corrected by c = N / (N + 1) (lr * c, beta ** c), as in StyleGAN2's lazy regularisation."""
    c = lazy_interval / (lazy_interval + 1) if lazy_interval > 1 else 1.0
    if cfg.optimizer == "adam":
        betas = (cfg.beta1**c, cfg.beta2**c)
        return torch.optim.Adam(params, lr=lr * c, betas=betas)
    return torch.optim.RMSprop(params, lr=lr * c)


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

    def __init__(self, config: TrainConfig, device: torch.device | str | None = None):
        self.cfg = cfg = resolve(config)
        self.device = torch.device(device) if device is not None else resolve_device(cfg.device)
        self.dataset = get_dataset(cfg.data)
        self.strategy = build_strategy(cfg)
        self.loss = get_loss(cfg.loss)

        # Initialise on the CPU from the seed alone, so the same seed gives the same weights on
        # any device and the caller's global RNG is left untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            generator, critic = build_models(cfg, self.dataset.shape)
            critic = self.strategy.prepare_critic(critic)
        self.generator = generator.to(self.device)
        self.critic = critic.to(self.device)
        self.ema = None
        if cfg.ema_decay > 0:
            self.ema = copy.deepcopy(self.generator).requires_grad_(False).eval()

        lazy = cfg.reg_every if self.strategy.penalty_at is not None else 1
        self.opt_g = make_optimizer(cfg, self.generator.parameters(), cfg.lr_g)
        self.opt_d = make_optimizer(cfg, self.critic.parameters(), cfg.lr_d, lazy)

        self.rng = torch.Generator(device=self.device)
        self.rng.manual_seed(cfg.seed)
        self.step = 0  # generator iterations done
        self.critic_steps = 0
        self._sums: dict[str, Tensor] = {}
        self._counts: dict[str, int] = {}
        self._last_batch: tuple[Tensor, Tensor] | None = None
        self.exact_resume = True  # False after resuming another device type's RNG state

    # --- one iteration ---------------------------------------------------------------
    def noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(n, self.cfg.z_dim, generator=generator or self.rng, device=self.device)

    def train_step(self) -> None:
        """n_critic critic steps, then one generator step and the EMA update."""
        for _ in range(self.cfg.n_critic):
            self._critic_step()
        self._generator_step()
        self.step += 1
        self._update_ema()

    def _critic_step(self) -> None:
        cfg, b = self.cfg, self.cfg.batch_size
        real = self.dataset.sample(b, self.rng, self.device)
        with torch.no_grad():
            fake = self.generator(self.noise(b))
        at = self.strategy.penalty_at
        if at is not None and self.critic_steps % cfg.reg_every != 0:
            at = None  # lazy regularisation: no penalty on this step
        inputs, leaves = penalties.penalty_inputs(at, real, fake, self.rng)
        out = self.critic(torch.cat(inputs))
        d_real, d_fake = out[:b], out[b : 2 * b]
        loss = self.loss.critic(d_real, d_fake)
        total = loss
        if leaves:
            grads = torch.autograd.grad(out.sum(), leaves, create_graph=True)
            penalty = self.strategy.penalty(list(grads))
            total = loss + cfg.reg_every * penalty  # weight N keeps the strength as asked
            self._track("penalty", penalty)
            self._track("penalty_grad_norm", torch.cat([penalties.grad_norm(g) for g in grads]).mean())
        self.opt_d.zero_grad(set_to_none=True)
        total.backward()
        self.opt_d.step()
        self.strategy.after_critic_step(self.critic)
        self.critic_steps += 1
        self._track("loss_d", loss)
        self._track("wasserstein", d_real.mean() - d_fake.mean())
        self._last_batch = (real.detach(), fake.detach())

    def _generator_step(self) -> None:
        fake = self.generator(self.noise(self.cfg.batch_size))
        self.critic.requires_grad_(False)  # no critic weight gradients during this backward
        try:
            loss = self.loss.generator(self.critic(fake))
            self.opt_g.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_g.step()
        finally:
            self.critic.requires_grad_(True)
        self._track("loss_g", loss)

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
