"""The training scalars a trainer reports: running sums of tracked values on the device (one
sync when they are read), their means since the last read, and the input-gradient norm at
interpolates of the last critic batch, the same measure for every method."""

from __future__ import annotations

from torch import Tensor

from ganctl.methods import penalties
from ganctl.methods.losses import gap_stats
from ganctl.nets.networks import Networks, eval_mode


class Stats:
    def __init__(self) -> None:
        self._sums: dict[str, Tensor] = {}
        self._counts: dict[str, int] = {}
        self.last_batch: tuple[Tensor, Tensor, Tensor | None] | None = None  # real, fake, labels

    def track(self, name: str, value: Tensor) -> None:
        value = value.detach()
        self._sums[name] = self._sums[name] + value if name in self._sums else value
        self._counts[name] = self._counts.get(name, 0) + 1

    def pop(self, nets: Networks) -> dict[str, float]:
        """Means of the tracked scalars since the last call (with the critic gap read as the
        loss allows), and the mean ||grad D|| at interpolates of the last critic batch, measured
        in eval mode from the evaluation stream at offset = the generator step (`streams`)."""
        stats = {k: float(v) / self._counts[k] for k, v in self._sums.items()}
        self._sums, self._counts = {}, {}
        if "critic_gap" in stats:
            stats.update(gap_stats(stats["critic_gap"], nets.cfg.loss))
        if self.last_batch is not None:
            real, fake, y = self.last_batch
            x_hat = penalties.interpolate(real, fake, nets.eval_generator(offset=nets.step))
            with eval_mode(nets.critic):
                _, grads = penalties.input_grads(nets.critic, x_hat, y=y)
            stats["grad_norm"] = float(penalties.grad_norm(grads).mean())
        return stats
