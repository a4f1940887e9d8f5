"""Built-in objectives against analytic counts and a model trained for real on digits, plus the Pareto front."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from searchcore.errors import UsageError
from searchcore.train import data
from searchcore.train.objectives import (
    BUILTIN,
    Objective,
    ObjectiveContext,
    count_macs,
    fgsm_accuracy,
    latency_ms,
    macs,
    noise_accuracy,
    params,
    pareto_front,
    register_builtin,
    val_accuracy,
)
from searchcore.train.trainer import TrainConfig, TrainResult, evaluate, train_model


@pytest.fixture(scope="module")
def digits() -> data.Splits:
    return data.load_digits(None, None, False, 0, 0.15, 0.15)


@pytest.fixture(scope="module")
def trained(digits) -> tuple[nn.Module, TrainResult]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 8 * 8, 10),
    )
    result = train_model(model, digits, TrainConfig(epochs=3, batch_size=32))
    assert result.val_accuracy > 0.8
    return model, result


def ctx(model: nn.Module, splits: data.Splits, result: TrainResult | None = None, **options) -> ObjectiveContext:
    return ObjectiveContext(model=model, splits=splits, result=result, spec=None, options=options, device="cpu")


def test_register_builtin_names_and_directions():
    got = []
    register_builtin(got.append)
    assert {o.name: o.direction for o in got} == {
        "val_accuracy": "maximize",
        "params": "minimize",
        "macs": "minimize",
        "latency_ms": "minimize",
        "noise_accuracy": "maximize",
        "fgsm_accuracy": "maximize",
    }
    assert tuple(got) == BUILTIN and all(o.help for o in got)


def test_objective_refuses_a_bad_direction():
    with pytest.raises(ValueError, match="direction"):
        Objective("speed", "fastest", params)


def test_params_counts_frozen_ones_too(digits):
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(3 * 6 * 6, 10))
    model[0].weight.requires_grad_(False)
    assert params(ctx(model, digits)) == sum(p.numel() for p in model.parameters()) == 27 + 3 + 6 + 1080 + 10


@pytest.mark.parametrize(
    ("module", "shape", "expected"),
    [
        (nn.Conv2d(3, 8, 3, padding=1), [3, 8, 8], 8 * 8 * 8 * (3 * 3 * 3)),
        (nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2), [4, 8, 8], 8 * 4 * 4 * (2 * 3 * 3)),
        (nn.Linear(10, 5), [10], 10 * 5),
    ],
)
def test_count_macs_matches_the_analytic_count(module, shape, expected):
    assert count_macs(module, shape) == expected


def test_macs_objective_uses_the_dataset_shape(digits):
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(128, 10)).train()
    assert macs(ctx(model, digits)) == 8 * 8 * 2 * 9 + 128 * 10
    assert model.training  # mode restored


def test_latency_is_positive(trained, digits):
    model, _ = trained
    value = latency_ms(ctx(model, digits, repeats=5))
    assert 0 < value < 1000 and math.isfinite(value)


def test_val_accuracy_from_result_or_measured(trained, digits):
    model, result = trained
    assert val_accuracy(ctx(model, digits, result)) == result.val_accuracy
    assert val_accuracy(ctx(model, digits)) == pytest.approx(result.val_accuracy)


def test_noise_accuracy(trained, digits):
    model, _ = trained
    clean = evaluate(model, digits.val_x, digits.val_y)
    assert noise_accuracy(ctx(model, digits, sigma=0.0)) == clean
    noisy = noise_accuracy(ctx(model, digits, sigma=1.5))
    assert noisy == noise_accuracy(ctx(model, digits, sigma=1.5))  # seeded
    assert noisy < clean
    with pytest.raises(UsageError, match="sigma"):
        noise_accuracy(ctx(model, digits, sigma=-1.0))


def test_fgsm_accuracy(trained, digits):
    model, _ = trained
    clean = evaluate(model, digits.val_x, digits.val_y)
    assert fgsm_accuracy(ctx(model, digits, epsilon=0.0)) == clean
    attacked = fgsm_accuracy(ctx(model, digits, epsilon=0.1))
    assert attacked <= clean and attacked < fgsm_accuracy(ctx(model, digits, epsilon=0.01)) + 1e-9
    assert all(p.grad is None for p in model.parameters())  # gradients taken w.r.t. the inputs only


def test_pareto_front_by_hand():
    values = [
        [0.90, 100],  # 0: front
        [0.80, 50],  # 1: front
        [0.85, 120],  # 2: dominated by 0
        [0.90, 100],  # 3: equal to 0, equal points do not dominate each other
        [0.70, 50],  # 4: dominated by 1
        [math.nan, 10],  # 5: NaN accuracy is the worst, but nobody is smaller
    ]
    assert pareto_front(values, ["maximize", "minimize"]) == [0, 1, 3, 5]
    assert pareto_front([[1.0], [3.0], [2.0]], ["maximize"]) == [1]
    assert pareto_front([[1.0], [3.0], [2.0]], ["minimize"]) == [0]
    assert pareto_front([], ["maximize"]) == []


def test_pareto_front_refuses_bad_input():
    with pytest.raises(UsageError, match="direction"):
        pareto_front([[1.0]], ["up"])
    with pytest.raises(UsageError, match="point 1"):
        pareto_front([[1.0, 2.0], [1.0]], ["maximize", "minimize"])
