"""One optimizer step with less Python around the kernel.

`torch.optim.Adam(fused=True).step()` spends most of its time on a small model outside the
kernel: the profiler hooks, grouping the tensors by device and dtype, and checks, repeated every
step (about 130 us against the kernel's 25 us for the 2-D critic, measured in
benchmarks/profile_step.py). Once every parameter has its state, `step` calls the same fused
kernel, `torch._fused_adam_`, on the lists torch's own `_fused_adam` would pass it, after the same
`state_steps += 1`: the same arithmetic in the same order, so the same bits (a test checks it
against `opt.step()` over steps with a changing lr and beta2). Anything else (a first step,
amsgrad, weight decay, a missing gradient, another optimizer, a torch without the kernel) goes
through `opt.step()`.
"""

from __future__ import annotations

import torch

_KERNEL = getattr(torch, "_fused_adam_", None)


def step(opt: torch.optim.Optimizer) -> None:
    """opt.step(), by the fused kernel directly where that computes the same update."""
    states = _direct_states(opt)
    if states is None:
        opt.step()
        return
    group = opt.param_groups[0]
    params = group["params"]
    steps = [s["step"] for s in states]
    torch._foreach_add_(steps, 1)  # what torch.optim.adam._fused_adam does before the kernel
    beta1, beta2 = group["betas"]
    _KERNEL(
        params,
        [p.grad for p in params],
        [s["exp_avg"] for s in states],
        [s["exp_avg_sq"] for s in states],
        [],
        steps,
        lr=group["lr"],
        beta1=beta1,
        beta2=beta2,
        weight_decay=0.0,
        eps=group["eps"],
        amsgrad=False,
        maximize=False,
    )


def direct(opt: torch.optim.Optimizer) -> bool:
    """Whether `step` would call the fused kernel itself (else opt.step())."""
    return _direct_states(opt) is not None


def _direct_states(opt: torch.optim.Optimizer) -> list[dict] | None:
    """The parameters' states where `step` can call the kernel itself, else None."""
    if _KERNEL is None or type(opt) is not torch.optim.Adam or len(opt.param_groups) != 1:
        return None
    group = opt.param_groups[0]
    if not group.get("fused") or group["amsgrad"] or group["weight_decay"] or group["maximize"]:
        return None
    if group.get("capturable") or group.get("differentiable") or group.get("decoupled_weight_decay"):
        return None
    params = group["params"]
    if torch.is_tensor(group["lr"]) or any(p.dtype != params[0].dtype or p.device != params[0].device for p in params):
        return None  # torch would split the kernel by device and dtype
    states = [opt.state.get(p) for p in params]
    if any(not s or p.grad is None or p.grad.is_sparse for p, s in zip(params, states)):
        return None
    return states
