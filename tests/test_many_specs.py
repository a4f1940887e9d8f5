"""200 specs sampled at random from the default space build and train a step on 8x8 and 32x32 inputs.

Torch runs on one thread here (restored afterwards): these models are small, and on a busy
2-core machine two intra-op threads spin against each other and make every pass ~10x slower.
"""

from __future__ import annotations

import optuna
import pytest
import torch

from searchcore.arch.spec import decode, encode
from searchcore.engine.config import load_space, resolve
from searchcore.plugins.building import build  # build(spec) with the loaded plugins' blocks
from searchcore.plugins.host import get_host

N_SPECS = 200
SHAPES = {"8x8": [1, 8, 8], "32x32": [3, 32, 32]}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def spaces() -> dict:
    return {name: resolve(load_space(None), get_host(), shape, 10) for name, shape in SHAPES.items()}


@pytest.fixture(scope="module")
def sampled_params(spaces) -> list[dict]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2024))
    params = [spaces["8x8"].sample(study.ask()) for _ in range(N_SPECS)]
    assert len({tuple(sorted(p.items())) for p in params}) == N_SPECS
    return params


def test_the_sample_covers_every_choice(spaces, sampled_params):
    """The 200 specs exercise every value of every dimension (so a plugin cannot hide from this file)."""
    for d in spaces["8x8"].dimensions:
        seen = {p[d.name] for p in sampled_params if d.name in p}
        assert seen == set(d.choices), d.name


@pytest.mark.parametrize("i", range(N_SPECS))
def test_sampled_spec_builds_and_trains(spaces, sampled_params, i):
    params = sampled_params[i]
    for name, shape in SHAPES.items():
        spec = spaces[name].spec(params)
        assert decode(encode(spec)) == spec
        model = build(spec, seed=i)
        assert all(m.training for m in model.modules())
        g = torch.Generator().manual_seed(i)
        x = torch.randn(2, *shape, generator=g)
        y = torch.randint(0, 10, (2,), generator=g)
        out = model(x)
        assert out.shape == (2, 10), (name, params)
        loss = torch.nn.functional.cross_entropy(out, y)
        assert torch.isfinite(loss), (name, params)
        loss.backward()
        for pname, p in model.named_parameters():
            assert p.grad is not None, f"{name}: {pname} got no gradient for {params}"
            assert torch.isfinite(p.grad).all(), f"{name}: {pname} has a non-finite gradient for {params}"
