"""The trainer, trained for real on the bundled digits data (CPU, a few seconds per run)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from searchcore.errors import Diverged, SearchcoreError, UsageError
from searchcore.train import data
from searchcore.train.trainer import TrainConfig, TrainResult, evaluate, pick_device, set_threads, train_model

KEYS = {"train_loss", "val_accuracy", "lr", "epoch_seconds"}


@pytest.fixture(scope="module")
def digits() -> data.Splits:
    return data.load_digits(None, None, False, 0, 0.15, 0.15)


def small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1, stride=2),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, 10),
    )


def tiny_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10))


class NaNNet(nn.Module):
    """Outputs NaN logits, so the very first epoch's loss is NaN."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1)) * float("nan")


def test_trains_digits_and_reports_every_epoch(digits):
    calls = []
    model = small_cnn()
    rng_before = torch.get_rng_state()
    result = train_model(
        model, digits, TrainConfig(epochs=3, batch_size=32, lr=3e-3), report=lambda e, m: calls.append((e, m))
    )
    assert isinstance(result, TrainResult)
    assert result.val_accuracy > 0.8
    assert [e for e, _ in calls] == [1, 2, 3]
    assert all(set(m) == KEYS and all(math.isfinite(v) for v in m.values()) for _, m in calls)
    assert result.history == [m for _, m in calls]
    assert result.val_accuracy == result.history[-1]["val_accuracy"]
    assert result.best_val_accuracy == max(h["val_accuracy"] for h in result.history)
    lrs = [h["lr"] for h in result.history]
    assert lrs[0] > lrs[1] > lrs[2] >= 0  # cosine decay
    assert result.device == "cpu" and result.seconds > 0
    assert torch.equal(torch.get_rng_state(), rng_before)  # seeded privately, caller's RNG untouched
    assert not model.training and all(p.grad is None for p in model.parameters())  # no gradients kept


def test_exception_from_report_propagates(digits):
    class Pruned(Exception):
        pass

    seen = []

    def report(epoch: int, metrics: dict) -> None:
        seen.append(epoch)
        raise Pruned

    with pytest.raises(Pruned):
        train_model(tiny_net(), digits, TrainConfig(epochs=3), report=report)
    assert seen == [1]


def test_nan_loss_raises_diverged(digits):
    with pytest.raises(Diverged) as exc:
        train_model(NaNNet(), digits, TrainConfig(epochs=2))
    assert isinstance(exc.value, SearchcoreError)
    assert "epoch 1" in str(exc.value) and "\n" not in str(exc.value)


def test_huge_lr_diverges(digits):
    with pytest.raises(Diverged):
        train_model(tiny_net(), digits, TrainConfig(epochs=1, lr=1e30, optimizer="sgd"))


def test_deterministic_runs_are_bitwise_identical(digits):
    def run() -> tuple[list, dict]:
        model = tiny_net(seed=1)
        result = train_model(model, digits, TrainConfig(epochs=2, deterministic=True, seed=5))
        history = [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in result.history]
        return history, model.state_dict()

    (h1, s1), (h2, s2) = run(), run()
    assert h1 == h2
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert not torch.are_deterministic_algorithms_enabled()  # restored afterwards


def test_custom_loss_sgd_and_label_smoothing(digits):
    calls = []

    def loss_fn(logits: torch.Tensor, targets: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        calls.append(len(inputs))
        return nn.functional.cross_entropy(logits, targets)

    cfg = TrainConfig(epochs=1, batch_size=500, optimizer="sgd", lr=0.05, label_smoothing=0.1)
    result = train_model(tiny_net(), digits, cfg, loss_fn=loss_fn)
    assert calls == [500, 500, 257]  # 1257 training examples
    assert math.isfinite(result.history[0]["train_loss"])


def test_last_batch_of_one_is_dropped(digits):
    calls = []

    def loss_fn(logits: torch.Tensor, targets: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        calls.append(len(inputs))
        return nn.functional.cross_entropy(logits, targets)

    train_model(tiny_net(), digits, TrainConfig(epochs=1, batch_size=628), loss_fn=loss_fn)  # 1257 = 2 * 628 + 1
    assert calls == [628, 628]


def test_evaluate_restores_mode_and_counts():
    class Always(nn.Module):
        def __init__(self, label: int) -> None:
            super().__init__()
            self.label = label
            self.bias = nn.Parameter(torch.zeros(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = self.bias.expand(len(x), 3).clone()
            logits[:, self.label] = 1.0
            return logits

    model = Always(2).train()
    y = torch.tensor([2, 0, 2, 1, 2])
    assert evaluate(model, torch.zeros(5, 1, 2, 2), y, batch_size=2) == pytest.approx(0.6)
    assert model.training
    with pytest.raises(UsageError):
        evaluate(model, torch.zeros(0, 1, 2, 2), torch.zeros(0, dtype=torch.int64))


def test_set_threads():
    before = torch.get_num_threads()
    try:
        set_threads(1)
        assert torch.get_num_threads() == 1
        set_threads(None)
        assert torch.get_num_threads() == 1
        with pytest.raises(UsageError):
            set_threads(0)
    finally:
        torch.set_num_threads(before)


def test_pick_device():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UsageError):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError) as exc:
            pick_device("cuda")
        assert "not available" in str(exc.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epochs", 0),
        ("epochs", 2.5),
        ("batch_size", 0),
        ("lr", 0.0),
        ("lr", float("nan")),
        ("optimizer", "adam"),
        ("weight_decay", -1.0),
        ("momentum", 1.0),
        ("label_smoothing", 1.0),
        ("seed", -1),
        ("threads", 0),
        ("deterministic", "yes"),
        ("device", "gpu"),
    ],
)
def test_bad_config_values(field, value):
    with pytest.raises(UsageError) as exc:
        TrainConfig(**{field: value})
    message = str(exc.value)
    assert field in message and "must be" in message and "\n" not in message
