"""Grad-CAM (Selvaraju et al. 2017) for searchcore networks: where in an image the winner looks.

The feature map explained is the input of a stage's downsampler (the stage's output after its
attention and shortcut, before it is shrunk): the deepest such map that is still at least
``MIN_SIDE`` pixels on a side. The last map of a small-input network (digits are 8x8) is 1x1
and would say nothing about *where*; one stage earlier it still has a layout to show.

For each image: the gradient of the predicted class's logit with respect to that map, averaged
over space, weights the map's channels; the ReLU of the weighted sum, upsampled to the image
and scaled to [0, 1], is the saliency map.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

MIN_SIDE = 4


@dataclass
class CamResult:
    maps: torch.Tensor  # N x H x W in [0, 1], at the input's resolution
    predicted: torch.Tensor  # N
    confidence: torch.Tensor  # N, softmax probability of the predicted class
    layer: str  # which feature map was explained


def pick_stage(model: nn.Module, input_shape: list[int]) -> int:
    """Index of the stage whose pre-downsampling map is explained (see the module docstring)."""
    sides: list[int] = []

    def side(m: nn.Module, inp: tuple) -> None:
        sides.append(int(min(inp[0].shape[-2:])) if inp[0].dim() == 4 else 0)

    hooks = [st.down.register_forward_pre_hook(side) for st in model.stages]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=next(model.parameters()).device))
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    good = [i for i, s in enumerate(sides) if s >= MIN_SIDE]
    if good:
        return good[-1]
    return max(range(len(sides)), key=lambda i: sides[i]) if sides else -1


def grad_cam(model: nn.Module, images: torch.Tensor, stage: int | None = None, target: torch.Tensor | None = None) -> CamResult:
    """Saliency maps of ``images`` (N x C x H x W) for ``target`` classes (default: the predicted ones)."""
    if not hasattr(model, "stages") or len(model.stages) == 0:
        raise ValueError("Grad-CAM needs a searchcore network with at least one stage")
    device = next(model.parameters()).device
    images = images.to(device)
    stage = pick_stage(model, list(images.shape[1:])) if stage is None else stage
    store: dict[str, torch.Tensor] = {}

    def keep(m: nn.Module, inp: tuple) -> None:
        store["features"] = inp[0]
        inp[0].retain_grad()

    was = model.training
    model.eval()
    handle = model.stages[stage].down.register_forward_pre_hook(keep)
    try:
        with torch.enable_grad():
            logits = model(images)
            probs = logits.softmax(dim=1)
            predicted = logits.argmax(dim=1)
            chosen = predicted if target is None else target.to(device)
            model.zero_grad(set_to_none=True)
            logits.gather(1, chosen[:, None]).sum().backward()
        feats = store["features"]
        grads = feats.grad
        weights = grads.mean(dim=(2, 3), keepdim=True)
        cam = F.relu((weights * feats).sum(dim=1, keepdim=True)).detach()
        cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        flat = cam.flatten(1)
        lo, hi = flat.min(dim=1).values[:, None, None], flat.max(dim=1).values[:, None, None]
        cam = torch.where(hi > lo, (cam - lo) / (hi - lo).clamp_min(1e-12), torch.zeros_like(cam))
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
        model.train(was)
    side = "x".join(map(str, feats.shape[-2:]))
    return CamResult(cam.cpu(), predicted.cpu(), probs.gather(1, predicted[:, None])[:, 0].detach().cpu(), f"stage {stage + 1} output ({side})")


def pick_images(x: torch.Tensor, y: torch.Tensor, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """The first validation image of each class, then the next ones, up to ``n``: varied and reproducible."""
    order: list[int] = []
    seen: set[int] = set()
    for i, label in enumerate(y.tolist()):
        if label not in seen:
            seen.add(label)
            order.append(i)
        if len(order) >= n:
            break
    order += [i for i in range(len(y)) if i not in set(order)][: max(0, n - len(order))]
    idx = torch.tensor(order[:n])
    return x[idx], y[idx]


def figure_png(images: torch.Tensor, labels: torch.Tensor, cam: CamResult, title: str = "") -> bytes:
    """Each image above its saliency overlay, with true and predicted class."""
    from matplotlib.figure import Figure

    n = len(images)
    fig = Figure(figsize=(1.45 * n + 0.4, 3.4), dpi=110, layout="constrained")
    axes = fig.subplots(2, n, squeeze=False)
    for i in range(n):
        img = images[i].detach().cpu().float()
        img = (img - img.min()) / (img.max() - img.min()).clamp_min(1e-12)
        shown = img[0] if img.shape[0] == 1 else img[:3].permute(1, 2, 0)
        cmap = "gray" if img.shape[0] == 1 else None
        axes[0, i].imshow(shown.numpy(), cmap=cmap, interpolation="nearest")
        axes[0, i].set_title(f"true {int(labels[i])}", fontsize=8)
        axes[1, i].imshow(shown.numpy(), cmap=cmap, interpolation="nearest")
        axes[1, i].imshow(cam.maps[i].numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1, interpolation="bilinear")
        ok = "" if int(cam.predicted[i]) == int(labels[i]) else " (wrong)"
        axes[1, i].set_title(f"pred {int(cam.predicted[i])} {cam.confidence[i]:.2f}{ok}", fontsize=8)
        for ax in axes[:, i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title or f"Grad-CAM of the best model ({cam.layer})", fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
