"""Edits of a pretrained network for the ``tvbase`` plugin, each initialised to the identity.

A kernel change embeds the learned kernel, attention gates start at exactly 1, a residual starts
with ``alpha = 0``: the base keeps what it learned until training moves it. Graph edits go through
``torch.fx``, falling back to module surgery where fx cannot trace; a dry forward pass checks every
shape at build time, so an edit that does not fit fails its trial alone, naming the edit.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from searchcore.errors import SpecError

EDITS = ("tvbase.kernel", "tvbase.se", "tvbase.cbam", "tvbase.residual")


def first_kxk_conv(module: nn.Module, prefix: str) -> tuple[str, int] | None:
    """Path and size of the first square convolution with a kernel larger than 1 under ``module``."""
    for name, m in module.named_modules():
        if isinstance(m, nn.Conv2d) and m.kernel_size[0] == m.kernel_size[1] and m.kernel_size[0] > 1:
            return (f"{prefix}.{name}" if name else prefix), int(m.kernel_size[0])
    return None


class Gate(nn.Module):
    """Squeeze-and-excitation that starts as the identity: ``x * 2 sigmoid(fc2(relu(fc1(mean x))))``, fc2 zero."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 * torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))


class GateCBAM(nn.Module):
    """CBAM (channel gate, then spatial gate) whose gates start at exactly 1."""

    def __init__(self, channels: int, reduction: int, kernel: int = 7) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, channels, 1))
        self.spatial = nn.Conv2d(2, 1, kernel, padding=kernel // 2)
        for m in (self.mlp[2], self.spatial):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.mlp(x.mean(dim=(2, 3), keepdim=True)) + self.mlp(x.amax(dim=(2, 3), keepdim=True))
        x = x * 2 * torch.sigmoid(gate)
        maps = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * 2 * torch.sigmoid(self.spatial(maps))


class ResidualAdd(nn.Module):
    """``y + alpha * proj(x)``: ``alpha`` starts at 0 so the link changes nothing until it is trained."""

    def __init__(self, proj: nn.Module) -> None:
        super().__init__()
        self.proj = proj
        self.alpha = nn.Parameter(torch.zeros(()))

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return y + self.alpha * self.proj(x)


class Wrapped(nn.Module):
    """Module surgery for a residual link when fx cannot trace: ``inner(x)`` plus the link."""

    def __init__(self, inner: nn.Module, link: ResidualAdd) -> None:
        super().__init__()
        self.inner, self.link = inner, link

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.link(self.inner(x), x)


def _projection(cin: int, cout: int, hin: int, hout: int) -> nn.Module:
    if cin == cout and hin == hout:
        return nn.Identity()
    stride = hin // hout if hout and hin % hout == 0 else None
    if stride is None:
        return nn.Sequential(nn.AdaptiveAvgPool2d(hout), nn.Conv2d(cin, cout, 1, bias=False))
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


def _new_kernel(conv: nn.Conv2d, k: int) -> nn.Conv2d:
    """The same convolution with a kxk kernel; the learned kernel is embedded in the centre (or cropped)."""
    old = conv.kernel_size[0]
    d = conv.dilation[0]
    new = nn.Conv2d(conv.in_channels, conv.out_channels, k, conv.stride, d * (k - 1) // 2, conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode)
    with torch.no_grad():
        new.weight.zero_()
        if k >= old:
            o = (k - old) // 2
            new.weight[:, :, o : o + old, o : o + old] = conv.weight
        else:
            o = (old - k) // 2
            new.weight.copy_(conv.weight[:, :, o : o + k, o : o + k])
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


class Chain(nn.Module):
    """Runs a network's units in order; ``root`` keeps the original module paths (``layer1.0.conv1``)."""

    def __init__(self, root: nn.Module, units: list[str]) -> None:
        super().__init__()
        self.root = root
        self.units = list(units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for path in self.units:
            x = self.root.get_submodule(path)(x)
        return x


class Pretrained(nn.Module):
    """The pretrained block: frozen units have no gradient and stay in eval mode.

    Why eval mode: a frozen BatchNorm that kept updating its running statistics would change
    what the frozen layers compute; freezing means the stage is bitwise what it learned.
    """

    def __init__(self, net: nn.Module, frozen: list[str]) -> None:
        super().__init__()
        self.net = net
        self.frozen = list(frozen)
        for path in self.frozen:
            for p in self.net.get_submodule(path).parameters():
                p.requires_grad_(False)
        self.train()

    def train(self, mode: bool = True) -> Pretrained:
        super().train(mode)
        for path in self.frozen:
            self.net.get_submodule(path).eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def unit_shapes(chain: Chain, input_shape: list[int]) -> dict[str, tuple[list[int], list[int]]]:
    """Input and output shape of every unit, from one dry forward pass in eval mode."""
    seen: dict[str, tuple[list[int], list[int]]] = {}
    hooks = []
    for path in chain.units:
        def hook(m: nn.Module, args: tuple, out: Any, _p: str = path) -> None:
            seen[_p] = (list(args[0].shape), list(out.shape) if isinstance(out, torch.Tensor) else [])

        hooks.append(chain.root.get_submodule(path).register_forward_hook(hook))
    try:
        dry_run(chain, input_shape, "the pretrained network")
    finally:
        for h in hooks:
            h.remove()
    return seen


def dry_run(module: nn.Module, input_shape: list[int], what: str) -> torch.Tensor:
    was = module.training
    module.eval()
    try:
        with torch.no_grad():
            return module(torch.zeros(1, *input_shape))
    except Exception as e:
        raise SpecError(f"{what} does not run on input {input_shape}: {type(e).__name__}: {' '.join(str(e).split())[:300]}") from None
    finally:
        module.train(was)


def edit_label(e: dict) -> str:
    return f"{e['type']}({', '.join(f'{k}={v}' for k, v in e.items() if k != 'type')})"


def apply_graph_edits(chain: Chain, edits: list[dict], shapes: dict, units: list[str]) -> nn.Module:
    """Insert attention and residual links with torch.fx; module surgery where fx cannot trace."""
    import torch.fx as fx

    if not edits:
        return chain
    targets = set()
    for e in edits:
        for key in ("after", "first", "last"):
            if key in e:
                targets.add(f"root.{e[key]}")

    class Tracer(fx.Tracer):
        """Traces only through the modules that hold an edit point; everything else is one leaf node."""

        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return not any(t.startswith(qualname + ".") for t in targets)

    try:
        graph = Tracer().trace(chain)
    except Exception:
        return _surgery(chain, edits, shapes)
    gm = fx.GraphModule(chain, graph)
    nodes = {n.target: n for n in gm.graph.nodes if n.op == "call_module"}
    for i, e in enumerate(edits):
        if e["type"] in ("tvbase.se", "tvbase.cbam"):
            node = nodes.get(f"root.{e['after']}")
            if node is None:
                raise SpecError(f"{edit_label(e)}: {e['after']!r} is not a module the network runs; units: {', '.join(units)}")
            channels = _channels_after(gm, e, shapes)
            m = Gate(channels, int(e["reduction"])) if e["type"] == "tvbase.se" else GateCBAM(channels, int(e["reduction"]))
            name = f"tvbase_{e['type'][7:]}_{i}"
            gm.add_submodule(name, m)
            with gm.graph.inserting_after(node):
                new = gm.graph.call_module(name, (node,))
            node.replace_all_uses_with(new, delete_user_cb=lambda u, _n=new: u is not _n)
        else:
            first, last = nodes.get(f"root.{e['first']}"), nodes.get(f"root.{e['last']}")
            if first is None or last is None:
                raise SpecError(f"{edit_label(e)}: first and last must be units the network runs; units: {', '.join(units)}")
            x = first.args[0]
            (cin, hin, _), (cout, hout, _) = _chw(shapes, e["first"], 0), _chw(shapes, e["last"], 1)
            name = f"tvbase_residual_{i}"
            gm.add_submodule(name, ResidualAdd(_projection(cin, cout, hin, hout)))
            with gm.graph.inserting_after(last):
                new = gm.graph.call_module(name, (last, x))
            last.replace_all_uses_with(new, delete_user_cb=lambda u, _n=new: u is not _n)
    gm.graph.lint()
    gm.recompile()
    return gm


def _chw(shapes: dict, unit: str, which: int) -> list[int]:
    if unit not in shapes:
        raise SpecError(f"{unit!r} is not a unit of the network, so its shape is unknown; units: {', '.join(shapes)}")
    shape = shapes[unit][which]
    if len(shape) != 4:
        raise SpecError(f"{unit!r} {'takes' if which == 0 else 'gives'} shape {shape}; the edit needs a feature map [N, C, H, W]")
    return shape[1:]


def _channels_after(gm: nn.Module, e: dict, shapes: dict) -> int:
    if e["after"] in shapes:
        return _chw(shapes, e["after"], 1)[0]
    found: list[int] = []
    target = gm.get_submodule(f"root.{e['after']}")
    h = target.register_forward_hook(lambda m, a, out: found.append(out.shape[1] if out.dim() == 4 else -1))
    try:
        dry_run(gm, shapes[next(iter(shapes))][0][1:], "the network")
    finally:
        h.remove()
    if not found or found[0] < 0:
        raise SpecError(f"{edit_label(e)}: the module's output is not a feature map [N, C, H, W]")
    return found[0]


def _surgery(chain: Chain, edits: list[dict], shapes: dict) -> nn.Module:
    """The same edits by replacing modules, for networks fx cannot trace."""
    for e in edits:
        if e["type"] in ("tvbase.se", "tvbase.cbam"):
            channels = _chw(shapes, e["after"], 1)[0]
            m = Gate(channels, int(e["reduction"])) if e["type"] == "tvbase.se" else GateCBAM(channels, int(e["reduction"]))
            chain.root.set_submodule(e["after"], nn.Sequential(chain.root.get_submodule(e["after"]), m))
        else:
            if e["first"] != e["last"]:
                raise SpecError(f"{edit_label(e)}: fx cannot trace this network, and surgery adds a residual link around one unit only")
            (cin, hin, _), (cout, hout, _) = _chw(shapes, e["first"], 0), _chw(shapes, e["last"], 1)
            inner = chain.root.get_submodule(e["first"])
            chain.root.set_submodule(e["first"], Wrapped(inner, ResidualAdd(_projection(cin, cout, hin, hout))))
    return chain


def apply_kernel_edits(root: nn.Module, edits: list[dict]) -> None:
    for e in edits:
        try:
            m = root.get_submodule(e["at"])
        except AttributeError:
            raise SpecError(f"{edit_label(e)}: no module at {e['at']!r}") from None
        path = e["at"]
        if not isinstance(m, nn.Conv2d):
            found = first_kxk_conv(m, e["at"])
            if found is None:
                raise SpecError(f"{edit_label(e)}: no kxk convolution at or under {e['at']!r}")
            path = found[0]
            m = root.get_submodule(path)
        k = int(e["k"])
        if k < 1 or k % 2 == 0:
            raise SpecError(f"{edit_label(e)}: k must be odd and positive, so 'same' padding keeps the shape")
        root.set_submodule(path, _new_kernel(m, k))


def check_edits(edits: Any) -> list[dict]:
    required = {"tvbase.kernel": ("at", "k"), "tvbase.se": ("after", "reduction"), "tvbase.cbam": ("after", "reduction"), "tvbase.residual": ("first", "last")}
    if not isinstance(edits, list):
        raise ValueError("edits must be a list of tvbase edit blocks")
    for e in edits:
        if not isinstance(e, dict) or e.get("type") not in required:
            raise ValueError(f"an edit is one of {', '.join(EDITS)}, got {e!r}")
        keys = set(e) - {"type"}
        if keys != set(required[e["type"]]):
            raise ValueError(f"{e['type']} takes exactly {', '.join(required[e['type']])}, got {', '.join(sorted(keys))}")
    return edits
