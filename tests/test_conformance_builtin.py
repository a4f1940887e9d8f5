"""The conformance kit run on every built-in improvement plugin, exactly as a third-party plugin runs it;
then the kit's own tests: each check fails on a plugin that breaks its rule, naming the problem."""

from __future__ import annotations

import inspect
import sys
import types
from collections.abc import Callable
from typing import Any

import pytest

from searchcore import hookimpl
from searchcore.arch.improve import conv_stages, copy_spec, stage_name
from searchcore.authoring.testing import PluginConformance, load_plugin, load_subject
from searchcore.space import Dimension


class TestKernel(PluginConformance):
    plugin_module = "searchcore_plugins.kernel"
    options = {"dilations": [1, 2]}  # the default has one dilation, so the dilation dimension would not exist


class TestResidual(PluginConformance):
    plugin_module = "searchcore_plugins.residual"


class TestDense(PluginConformance):
    plugin_module = "searchcore_plugins.dense"


class TestAttention(PluginConformance):
    plugin_module = "searchcore_plugins.attention"


class TestPooling(PluginConformance):
    plugin_module = "searchcore_plugins.pooling"


class TestWidthDepth(PluginConformance):
    plugin_module = "searchcore_plugins.widthdepth"


class TestNormAct(PluginConformance):
    plugin_module = "searchcore_plugins.normact"


# --- the kit on deliberately broken plugins ---------------------------------------------------------


def dims_on_off(base: dict) -> list[Dimension]:
    return [Dimension.categorical(f"fake.{stage_name(i)}", [False, True]) for i in conv_stages(base)]


def transform_shortcut(spec: dict, params: dict) -> dict:
    spec = copy_spec(spec)
    for i, st in enumerate(spec["stages"]):
        if params.get(f"fake.{stage_name(i)}"):
            st["shortcut"] = "auto"
    return spec


GOOD: dict[str, Callable[..., Any]] = {"searchcore_dimensions": dims_on_off, "searchcore_transform": transform_shortcut}


def fake_plugin(monkeypatch: pytest.MonkeyPatch, **hooks: Callable[..., Any]) -> type[PluginConformance]:
    """A plugin module named ``fake`` from hook functions (the good ones unless replaced), and a kit class for it."""
    module = types.ModuleType("fake_plugin_under_test")
    for hook, fn in {**GOOD, **hooks}.items():
        if fn is not None:
            setattr(module, hook, hookimpl(fn))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return type("TestFake", (PluginConformance,), {"plugin_module": module.__name__, "plugin_name": "fake"})


def outcome(cls: type[PluginConformance], test: str) -> str:
    """Run one kit test by hand; '' when it passes, else its failure message."""
    method = getattr(cls(), test)
    loaded = load_plugin(cls)
    arg = loaded if "loaded" in inspect.signature(method).parameters else load_subject(cls, loaded)
    try:
        method(arg)
    except (AssertionError, pytest.fail.Exception) as e:
        return str(e) or "failed"
    return ""


KIT_TESTS = [n for n in dir(PluginConformance) if n.startswith("test_")]


def test_a_good_plugin_passes_every_check(monkeypatch: pytest.MonkeyPatch) -> None:
    cls = fake_plugin(monkeypatch)
    assert len(KIT_TESTS) >= 11
    assert {t: outcome(cls, t) for t in KIT_TESTS} == {t: "" for t in KIT_TESTS}


def test_mutating_the_input_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    def mutating(spec: dict, params: dict) -> dict:
        for i, st in enumerate(spec["stages"]):
            if params.get(f"fake.{stage_name(i)}"):
                st["shortcut"] = "auto"
        return spec

    msg = outcome(fake_plugin(monkeypatch, searchcore_transform=mutating), "test_transform_is_pure")
    assert "mutated its input spec" in msg and "fake.s1=True" in msg


def test_unnamespaced_dimension_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    def dims(base: dict) -> list[Dimension]:
        return [Dimension.categorical("s1", [False, True])]

    msg = outcome(
        fake_plugin(monkeypatch, searchcore_dimensions=dims, searchcore_transform=None),
        "test_dimensions_valid_and_namespaced",
    )
    assert "'s1' must start with 'fake.'" in msg


def test_a_dimension_the_transform_ignores_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    def typo(spec: dict, params: dict) -> dict:
        return transform_shortcut(spec, {k.replace("fake.s", "fake.stage"): v for k, v in params.items()})

    msg = outcome(fake_plugin(monkeypatch, searchcore_transform=typo), "test_every_dimension_changes_the_spec")
    assert "never change the spec" in msg and "fake.s1" in msg


def test_changing_the_spec_when_off_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    def always(spec: dict, params: dict) -> dict:
        return transform_shortcut(spec, {"fake.s1": True})

    assert "with every dimension off" in outcome(
        fake_plugin(monkeypatch, searchcore_transform=always), "test_off_leaves_the_spec_unchanged"
    )


def test_a_value_that_does_not_build_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    def dims(base: dict) -> list[Dimension]:
        return [Dimension.int("fake.width", 1, 3, off=1)]

    def transform(spec: dict, params: dict) -> dict:
        spec = copy_spec(spec)
        if params["fake.width"] > 1:
            spec["stages"][0]["body"].append({"type": "fake.block", "n": params["fake.width"]})
        return spec

    def factory(in_ch: int, o: dict, ctx: Any) -> tuple[Any, int]:
        import torch

        if o["n"] == 3:
            raise ValueError("three is not supported")
        return torch.nn.Conv2d(in_ch, in_ch, 1), in_ch

    def blocks(register: Any) -> None:
        register("fake.block", factory)

    cls = fake_plugin(monkeypatch, searchcore_dimensions=dims, searchcore_transform=transform, searchcore_blocks=blocks)
    msg = outcome(cls, "test_every_value_builds_and_trains")
    assert "fake.width=3" in msg and "three is not supported" in msg and "fake.width=2" not in msg


def test_a_non_json_value_in_the_spec_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    def tuple_kernel(spec: dict, params: dict) -> dict:
        spec = transform_shortcut(spec, params)
        if params.get("fake.s1"):
            spec["stages"][0]["body"][0]["k"] = (3, 3)
        return spec

    assert "fake.s1=True" in outcome(
        fake_plugin(monkeypatch, searchcore_transform=tuple_kernel), "test_spec_round_trips"
    )


def test_a_builtin_dimension_name_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    def dims(base: dict) -> list[Dimension]:
        return [*dims_on_off(base), Dimension.categorical("kernel.s1", [3, 5])]

    msg = outcome(fake_plugin(monkeypatch, searchcore_dimensions=dims), "test_no_clash_with_builtins")
    assert "dimension 'kernel.s1' (also plugin 'kernel')" in msg


def test_a_builtin_block_type_breaks_registration(monkeypatch: pytest.MonkeyPatch) -> None:
    def blocks(register: Any) -> None:
        register("attention.se", lambda in_ch, o, ctx: None)

    msg = outcome(fake_plugin(monkeypatch, searchcore_blocks=blocks), "test_registers_cleanly")
    assert "'attention.se' is already registered by plugin 'attention'" in msg


def test_a_plugin_without_improvement_hooks_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    cls = fake_plugin(
        monkeypatch, searchcore_dimensions=None, searchcore_transform=None, searchcore_samplers=lambda register: None
    )
    assert "an improvement plugin implements" in outcome(cls, "test_registers_cleanly")
