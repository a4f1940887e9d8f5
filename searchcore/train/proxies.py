"""Zero-cost proxies: scores of an untrained model that predict, roughly, how well it will train.

Why: training is the whole cost of a search, and a score that needs one forward (and backward)
pass lets a strategy screen many candidates and train only the promising ones. Each proxy works
on a copy of the model, so the caller's model (weights, buffers, training mode) is untouched, and
runs under a fixed seed, so the same model and batch always score the same.

- ``naswot`` (Mellor et al., ICML 2021): how differently the untrained network's activation
  pattern separates the examples of one batch; log|det K| of the binary-code kernel.
- ``synflow`` (Tanaka et al., NeurIPS 2020): data-free; the total "synaptic flow" of the
  network with absolute weights on an all-ones input.
- ``params`` and ``macs``: costs, lower is cheaper (``direction = "minimize"``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from searchcore.train.objectives import count_macs

Scorer = Callable[[nn.Module, "torch.Tensor | None"], float]

# Activation modules whose input sign is the unit's on/off code. The paper counts ReLUs; the core
# blocks also use GELU and SiLU, which are "on" (close to the identity) exactly where their input is
# positive, so the pre-activation sign is the same binary code for all of them.
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Hardswish, nn.Hardtanh, nn.Softplus,
)
SEED = 0


@contextmanager
def _scratch(model: nn.Module, seed: int = SEED) -> Iterator[nn.Module]:
    """A deep copy of ``model`` to score, under a fixed RNG seed (dropout, any random op) that the
    caller's RNG never notices; the original is never touched, whatever the proxy does."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield copy.deepcopy(model)


def _input_shape(model: nn.Module, batch: torch.Tensor | None) -> list[int]:
    if batch is not None:
        return [int(d) for d in batch.shape[1:]]
    spec = getattr(model, "spec", None)
    if isinstance(spec, dict) and "input" in spec:
        return [int(d) for d in spec["input"]]
    raise ValueError("no batch and the model has no spec to say its input shape")


def naswot(model: nn.Module, batch: torch.Tensor | None) -> float:
    """NASWOT: log|det K| with K = sum over activation layers of C C^T + (1-C)(1-C)^T, where C is the
    batch's binary codes (pre-activation > 0) at that layer. K[i, j] counts the units on which examples
    i and j agree; a network that maps different inputs to different codes has a well-conditioned K
    and tends to train to higher accuracy. Higher is more promising; -inf when two examples share
    every code. BatchNorm normalises with the batch's statistics, as at the first training step.
    """
    if batch is None:
        raise ValueError("naswot needs a batch of inputs")
    n = batch.shape[0]
    kernel = torch.zeros(n, n, dtype=torch.float64)
    seen = 0

    def record(module: nn.Module, args: tuple) -> None:
        nonlocal kernel, seen
        codes = (args[0].detach().reshape(n, -1) > 0).to(torch.float64)
        kernel = kernel + codes @ codes.T + (1.0 - codes) @ (1.0 - codes).T
        seen += 1

    with _scratch(model) as m:
        # pre-hooks: an in-place activation overwrites its input, so the sign is read before it runs
        handles = [mod.register_forward_pre_hook(record) for mod in m.modules() if isinstance(mod, ACTIVATION_TYPES)]
        try:
            m.train()
            with torch.no_grad():
                m(batch.to(torch.float32))
        finally:
            for h in handles:
                h.remove()
    if seen == 0:
        raise ValueError("naswot: the model has no activation layers to read codes from")
    return float(torch.linalg.slogdet(kernel)[1])


def synflow(model: nn.Module, batch: torch.Tensor | None = None) -> float:
    """SynFlow: sum over parameters of |theta * dR/dtheta|, where R is the sum of the output of the
    network with every parameter and buffer replaced by its absolute value, on one all-ones input.
    Data-free (``batch`` only gives the input shape). Computed in float64 so deep networks do not
    overflow; BatchNorm in eval mode, so with its untrained statistics it is the positive affine map
    of the paper's linearised network. Higher is more promising (more signal flows end to end)."""
    shape = _input_shape(model, batch)
    with _scratch(model) as m:
        m = m.double().eval()
        with torch.no_grad():
            for t in m.state_dict().values():
                if t.is_floating_point():
                    t.abs_()
        m.zero_grad(set_to_none=True)
        r = m(torch.ones(1, *shape, dtype=torch.float64)).sum()
        params = [p for p in m.parameters() if p.requires_grad]
        grads = torch.autograd.grad(r, params, allow_unused=True)
        with torch.no_grad():
            total = sum(float((p * g).abs().sum()) for p, g in zip(params, grads) if g is not None)
    return float(total)


def params(model: nn.Module, batch: torch.Tensor | None = None) -> float:
    """Every parameter, trainable or frozen: the model's size. A cost: lower is cheaper."""
    return float(sum(p.numel() for p in model.parameters()))


def macs(model: nn.Module, batch: torch.Tensor | None = None) -> float:
    """Multiply-accumulates of one forward pass on one example (torch's ``FlopCounterMode``). A cost."""
    return float(count_macs(model, _input_shape(model, batch)))  # eval mode, no_grad, mode restored


params.direction = "minimize"  # type: ignore[attr-defined]
macs.direction = "minimize"  # type: ignore[attr-defined]
BUILTIN: dict[str, Scorer] = {"naswot": naswot, "synflow": synflow, "params": params, "macs": macs}


def direction(scorer: Any) -> str:
    """``maximize`` unless the scorer says it is a cost (``direction = "minimize"``)."""
    return "minimize" if getattr(scorer, "direction", "maximize") == "minimize" else "maximize"


def register_builtin(register: Callable[[str, Scorer], None]) -> None:
    """The core plugin's proxies."""
    for name, scorer in BUILTIN.items():
        register(name, scorer)


__all__ = ["naswot", "synflow", "params", "macs", "direction", "register_builtin", "ACTIVATION_TYPES"]
