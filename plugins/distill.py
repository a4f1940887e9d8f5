"""Knowledge distillation: a registered model teaches the network the search builds (the student).

The student trains on ``(1 - alpha) * CE(student, labels) + alpha * T^2 * KL(teacher_T || student_T)``
(Hinton et al. 2015), with the temperature ``T`` and the weight ``alpha`` searched. The teacher is
``models:/NAME/VERSION`` (option ``teacher``), e.g. the winner of an earlier, bigger search; the
student is whatever the backbone and the other plugins make, usually something smaller.

The choice is recorded in the spec as a ``distill.teacher`` block at the end of the head (an
identity at inference), so a winner retrains with the same teacher. Every trial's record holds
the teacher's val accuracy and parameter count next to the student's (``val_accuracy``,
``params``) and their ratio; a final retrain adds the teacher's test accuracy.

Without a ``teacher`` option the plugin declares nothing, so it never changes a space by itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from searchcore.arch.build import BuildContext
from searchcore.arch.improve import copy_spec
from searchcore.errors import UsageError
from searchcore.plugins.hookspecs import hookimpl
from searchcore.space import Dimension

BLOCK = "distill.teacher"
BLOCK_KEYS = {"uri", "tracking", "temperature", "alpha"}


@hookimpl
def searchcore_options() -> dict[str, Any]:
    return {"teacher": "", "tracking_uri": "", "temperatures": [2.0, 4.0, 8.0], "alphas": [0.0, 0.5, 0.7, 0.9]}


def _teacher_spec(options: dict) -> dict:
    from searchcore.track import models

    return models.lookup(options["teacher"], models.pinned_tracking(options["tracking_uri"] or None)).spec


@hookimpl
def searchcore_dimensions(base: dict, options: dict) -> list[Dimension]:
    if not options["teacher"]:
        return []
    teacher = _teacher_spec(options)
    if list(teacher["input"]) != list(base["input"]) or teacher["classes"] != base["classes"]:
        raise UsageError(f"plugin distill: teacher {options['teacher']} takes {teacher['input']} -> {teacher['classes']} classes, "
                         f"the student {base['input']} -> {base['classes']}")
    alphas = options["alphas"]
    if any(not 0.0 <= a <= 1.0 for a in alphas):
        raise UsageError(f"plugin distill: alphas must be in [0, 1], got {alphas}")
    if any(t <= 0 for t in options["temperatures"]):
        raise UsageError(f"plugin distill: temperatures must be > 0, got {options['temperatures']}")
    on = [a for a in alphas if a > 0]
    dims = [Dimension.categorical("distill.alpha", alphas, off=0.0 if 0.0 in alphas else None, help="weight of the teacher's soft targets")]
    if on:
        dims.append(Dimension.categorical("distill.temperature", options["temperatures"], condition=("distill.alpha", on), help="softmax temperature"))
    return dims


@hookimpl
def searchcore_transform(spec: dict, params: dict, options: dict) -> dict | None:
    from searchcore.track import models

    alpha = params.get("distill.alpha", 0.0)
    if not alpha:
        return None
    spec = copy_spec(spec)
    marker = {
        "type": BLOCK, "uri": options["teacher"], "tracking": models.pinned_tracking(options["tracking_uri"] or None),
        "temperature": float(params["distill.temperature"]), "alpha": float(alpha),
    }
    spec["head"] = spec["head"] + [marker]
    return spec


def teacher_block(in_ch: int, o: dict, ctx: BuildContext) -> tuple[nn.Module, int]:
    """At inference the student stands alone: the teacher block is an identity that records the teacher."""
    unknown = set(o) - BLOCK_KEYS
    if unknown:
        raise ValueError(f"unknown option {sorted(unknown)[0]!r}; allowed: {', '.join(sorted(BLOCK_KEYS))}")
    return nn.Identity(), in_ch


@hookimpl
def searchcore_blocks(register: Callable[..., None]) -> None:
    register(BLOCK, teacher_block)


def distillation_loss(teacher: nn.Module, temperature: float, alpha: float, label_smoothing: float = 0.0) -> Callable[..., torch.Tensor]:
    """``loss_fn(logits, targets, inputs)`` for the trainer; the teacher runs on the same batch without gradients."""
    t2 = temperature * temperature

    def loss_fn(logits: torch.Tensor, targets: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        if next(teacher.parameters()).device != inputs.device:
            teacher.to(inputs.device)
        with torch.no_grad():
            soft = F.log_softmax(teacher(inputs).float() / temperature, dim=1)
        hard = F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
        kd = F.kl_div(F.log_softmax(logits.float() / temperature, dim=1), soft, reduction="batchmean", log_target=True) * t2
        return (1.0 - alpha) * hard + alpha * kd

    return loss_fn


@hookimpl
def searchcore_training(model: Any, spec: dict, context: Any) -> dict | None:
    from searchcore.track import models

    marker = next((b for b in spec["head"] if b["type"] == BLOCK), None)
    if marker is None:
        return None
    info, teacher = models.load(marker["uri"], marker.get("tracking"))
    if list(info.spec["input"]) != list(spec["input"]) or info.spec["classes"] != spec["classes"]:
        raise UsageError(f"distill: teacher {marker['uri']} does not take this student's input {spec['input']} -> {spec['classes']} classes")
    teacher.eval().requires_grad_(False)
    teacher_params = sum(p.numel() for p in teacher.parameters())
    student_params = sum(p.numel() for p in model.parameters())
    context.metrics["teacher_val_accuracy"] = context.evaluate(teacher, "val")
    if context.final:
        context.metrics["teacher_test_accuracy"] = context.evaluate(teacher, "test")
    context.metrics["teacher_params"] = float(teacher_params)
    context.metrics["student_params"] = float(student_params)
    context.metrics["params_ratio"] = student_params / max(1, teacher_params)
    loss = distillation_loss(teacher, float(marker["temperature"]), float(marker["alpha"]), context.config.label_smoothing)
    return {"loss_fn": loss}
