"""The plugin host: discovers plugins, keeps broken ones out, and owns the catalogs.

Built-in plugins and third-party ones arrive the same way, through the entry-point group
``searchcore``. Development modules come from ``--plugin MODULE`` or the environment
variable ``SEARCHCORE_PLUGINS`` (comma-separated); ``--disable NAME`` or
``SEARCHCORE_DISABLE`` keep a plugin out. A plugin that fails to import, implements an
unknown hook, has a bad hook signature, or declares a dimension another plugin already
declared is recorded as broken with its reason; the others still load.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from searchcore.errors import PluginError, SpaceFileError
from searchcore.plugins import hookspecs
from searchcore.space import Dimension

GROUP = "searchcore"
ENV_PLUGINS = "SEARCHCORE_PLUGINS"
ENV_DISABLE = "SEARCHCORE_DISABLE"
ENV_TRACE = "SEARCHCORE_TRACE_HOOKS"
CATALOGS = ("blocks", "backbones", "datasets", "objectives", "samplers", "evaluators", "zero_cost")


@dataclass
class PluginInfo:
    """What ``searchcore plugins`` shows for one plugin."""

    name: str
    package: str
    version: str
    source: str  # "entry point", "--plugin", "builtin-core"
    location: str = ""
    hooks: list[str] = field(default_factory=list)
    dimensions: list[str] = field(default_factory=list)
    status: str = "ok"  # "ok", "disabled" or "broken: <reason>"
    module: Any = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class PluginHost:
    """Loads plugins once and answers every question about them."""

    def __init__(
        self,
        extra_modules: Iterable[str] = (),
        disabled: Iterable[str] = (),
        entry_points: Iterable[md.EntryPoint] | None = None,
        trace: bool | None = None,
    ) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.disabled = set(disabled) | _env_list(ENV_DISABLE)
        self._catalogs: dict[str, dict[str, Any]] | None = None
        self._providers: dict[str, dict[str, str]] = {c: {} for c in CATALOGS}
        self.hook_times: dict[str, list[float]] = {}
        eps = list(entry_points) if entry_points is not None else list(md.entry_points(group=GROUP))
        for ep in sorted(eps, key=lambda e: e.name):
            self._load_entry_point(ep)
        for module in [*extra_modules, *sorted(_env_list(ENV_PLUGINS))]:
            self._load_module(module)
        if trace if trace is not None else os.environ.get(ENV_TRACE, "") not in ("", "0"):
            self.enable_tracing()

    # --- loading -----------------------------------------------------------------------------

    def _load_entry_point(self, ep: md.EntryPoint) -> None:
        dist = getattr(ep, "dist", None)
        package = dist.metadata["Name"] if dist is not None else "unknown"
        version = dist.version if dist is not None else "unknown"
        info = PluginInfo(ep.name, package, version, "entry point")
        self._add(info, lambda: ep.load())

    def _load_module(self, module: str) -> None:
        name = module.rsplit(".", 1)[-1]
        info = PluginInfo(name, "(development)", "dev", "--plugin")
        self._add(info, lambda: importlib.import_module(module))

    def _add(self, info: PluginInfo, load: Callable[[], Any]) -> None:
        if info.name in self.infos:
            first = self.infos[info.name]
            info.status = f"broken: plugin name {info.name!r} is already taken by package {first.package}"
            self.infos[f"{info.name} ({info.package})"] = info
            return
        self.infos[info.name] = info
        if info.name in self.disabled:
            info.status = "disabled"
            return
        try:
            module = load()
        except Exception as e:  # a plugin's import may raise anything; record it, keep the others
            info.status = f"broken: import failed: {type(e).__name__}: {e}"
            return
        info.module = module
        info.location = getattr(module, "__file__", "") or repr(module)
        try:
            self.pm.register(module, name=info.name)
        except pluggy.PluginValidationError as e:
            info.status = f"broken: {_one_line(e)}"
            return
        unknown = [hc.name for hc in self.pm.get_hookcallers(module) or [] if hc.spec is None]
        if unknown:
            self.pm.unregister(module)
            info.status = f"broken: unknown hook {unknown[0]!r} (see searchcore.plugins.hookspecs for the hooks that exist)"
            return
        info.hooks = sorted(hc.name for hc in self.pm.get_hookcallers(module) or [])

    def break_plugin(self, name: str, reason: str) -> None:
        info = self.infos[name]
        info.status = f"broken: {reason}"
        if self.pm.is_registered(info.module):
            self.pm.unregister(info.module)
        self._catalogs = None

    def require(self, name: str) -> PluginInfo:
        info = self.infos.get(name)
        if info is None:
            raise PluginError(name, "?", f"not installed; installed plugins: {', '.join(sorted(self.infos))}")
        if not info.ok:
            raise PluginError(name, info.package, info.status)
        return info

    @property
    def loaded(self) -> list[PluginInfo]:
        return [i for i in self.infos.values() if i.ok]

    # --- calling hooks -----------------------------------------------------------------------

    def call_each(self, hook: str, plugins: Iterable[str] | None = None, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call ``hook`` on each plugin separately, in plugin-name order; ``[(plugin, result)]``."""
        impls = {impl.plugin_name: impl for impl in getattr(self.pm.hook, hook).get_hookimpls()}
        names = sorted(impls) if plugins is None else [p for p in plugins if p in impls]
        out = []
        for name in names:
            impl = impls[name]
            args = {a: kwargs[a] for a in impl.argnames}
            try:
                result = self._timed(hook, name, impl.function, args)
            except Exception as e:
                info = self.infos[name]
                raise PluginError(name, info.package, f"{hook} raised {type(e).__name__}: {e}") from e
            out.append((name, result))
        return out

    def _timed(self, hook: str, plugin: str, fn: Callable, args: dict) -> Any:
        if not self._tracing:
            return fn(**args)
        t = time.perf_counter()
        try:
            return fn(**args)
        finally:
            dt = time.perf_counter() - t
            self.hook_times.setdefault(f"{hook}[{plugin}]", []).append(dt)
            _trace_write(f"{hook} [{plugin}] {dt * 1000:.2f} ms")

    _tracing = False

    def enable_tracing(self) -> None:
        """Print every hook call with its plugin and duration to stderr (``--trace-hooks``)."""
        self._tracing = True
        starts: list[float] = []

        def before(hook_name: str, hook_impls: list, kwargs: dict) -> None:
            starts.append(time.perf_counter())

        def after(outcome: Any, hook_name: str, hook_impls: list, kwargs: dict) -> None:
            dt = time.perf_counter() - starts.pop()
            names = ",".join(i.plugin_name for i in hook_impls)
            self.hook_times.setdefault(hook_name, []).append(dt)
            _trace_write(f"{hook_name} [{names}] {dt * 1000:.2f} ms")

        self.pm.add_hookcall_monitoring(before, after)

    # --- catalogs ----------------------------------------------------------------------------

    def catalog(self, kind: str) -> dict[str, Any]:
        """Items registered by plugins through ``searchcore_<kind>(register)``."""
        if self._catalogs is None:
            self._catalogs = self._collect()
        return self._catalogs[kind]

    def provider(self, kind: str, item: str) -> str:
        self.catalog(kind)
        return self._providers[kind].get(item, "?")

    def blocks(self) -> dict[str, Any]:
        from searchcore.arch.build import CORE_BLOCKS

        return {**CORE_BLOCKS, **self.catalog("blocks")}

    def _collect(self) -> dict[str, dict[str, Any]]:
        catalogs: dict[str, dict[str, Any]] = {c: {} for c in CATALOGS}
        for kind in CATALOGS:
            for info in sorted(self.loaded, key=lambda i: i.name):
                def register(name: Any, item: Any = None, *, _kind: str = kind, _plugin: str = info.name) -> None:
                    if item is None:  # register(objective): the item carries its name
                        item, name = name, getattr(name, "name", None)
                    if not isinstance(name, str) or not name:
                        raise TypeError(f"register() needs a non-empty string name, got {name!r}")
                    if _kind == "blocks" and name in _core_blocks():
                        raise ValueError(f"block {name!r} is a core block type; plugin blocks are named 'plugin.block'")
                    if name in catalogs[_kind]:
                        other = self._providers[_kind][name]
                        raise ValueError(f"{_singular(_kind)} {name!r} is already registered by plugin {other!r}")
                    if _kind == "zero_cost" and not callable(item):
                        raise TypeError(f"zero-cost proxy {name!r}: expected a callable scorer(model, batch), got {type(item).__name__}")
                    catalogs[_kind][name] = item
                    self._providers[_kind][name] = _plugin

                try:
                    self.call_each(f"searchcore_{kind}", plugins=[info.name], register=register)
                except PluginError as e:
                    info.status = f"broken: {_one_line(e.__cause__ or e)}"
                    if self.pm.is_registered(info.module):
                        self.pm.unregister(info.module)
        return catalogs

    # --- improvements ------------------------------------------------------------------------

    def improvement_plugins(self) -> list[str]:
        """Plugins that add dimensions or transform specs, in the order transforms apply."""
        names = {n for n, _ in self._impl_names("searchcore_dimensions")}
        names |= {n for n, _ in self._impl_names("searchcore_transform")}
        return sorted(names)

    def _impl_names(self, hook: str) -> list[tuple[str, Any]]:
        return [(i.plugin_name, i) for i in getattr(self.pm.hook, hook).get_hookimpls()]

    def options(self, plugin: str) -> dict[str, Any]:
        results = self.call_each("searchcore_options", plugins=[plugin])
        return dict(results[0][1] or {}) if results else {}

    def resolve_options(self, plugin: str, overrides: dict[str, Any], source: str) -> dict[str, Any]:
        """Defaults merged with a space file's overrides; unknown keys and wrong types refused."""
        defaults = self.options(plugin)
        merged = dict(defaults)
        for key, value in overrides.items():
            where = f"plugins.{plugin}.{key}"
            if key not in defaults:
                allowed = ", ".join(sorted(defaults)) or "none (this plugin takes no options)"
                raise SpaceFileError(source, where, f"unknown option; allowed: {allowed}")
            merged[key] = check_option_type(defaults[key], value, source, where)
        return merged

    def dimensions(self, base: dict, options: dict[str, dict], plugins: list[str]) -> list[Dimension]:
        """Every enabled plugin's dimensions; a name clash breaks the later plugin."""
        dims: list[Dimension] = []
        owner: dict[str, str] = {}
        for name in plugins:
            got = self.call_each("searchcore_dimensions", plugins=[name], base=base, options=options.get(name, {}))
            if not got:
                continue
            declared = list(got[0][1] or [])
            for d in declared:
                if not isinstance(d, Dimension):
                    raise PluginError(name, self.infos[name].package, f"searchcore_dimensions returned {d!r}, not a Dimension")
                if d.name in owner:
                    reason = f"dimension name {d.name!r} is already taken by plugin {owner[d.name]!r}"
                    self.break_plugin(name, reason)
                    raise PluginError(name, self.infos[name].package, reason)
            for d in declared:
                owner[d.name] = name
                dims.append(Dimension(**{**d.__dict__, "plugin": name}))
        return dims

    def transform(self, base: dict, params: dict[str, Any], plugins: list[str], options: dict[str, dict], owners: dict[str, str]) -> dict:
        """Apply each plugin's transformation in order; each sees only its own params."""
        from searchcore.arch.spec import validate

        spec = base
        for name in plugins:
            own = {k: v for k, v in params.items() if owners.get(k) == name}
            got = self.call_each("searchcore_transform", plugins=[name], spec=spec, params=own, options=options.get(name, {}))
            if got and got[0][1] is not None:
                spec = got[0][1]
        return validate(spec, "transformed spec")


def check_option_type(default: Any, value: Any, source: str, where: str) -> Any:
    """A value must have the default's type; a list default wants a non-empty list of its element type."""
    def kind(v: Any) -> str:
        return "null" if v is None else {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "mapping"}.get(type(v), type(v).__name__)

    if isinstance(default, list):
        if not isinstance(value, list) or not value:
            raise SpaceFileError(source, where, f"expected a non-empty list, got {kind(value)}")
        if default:
            elem = default[0]
            for v in value:
                if _type_ok(elem, v) is None:
                    raise SpaceFileError(source, where, f"list items must be {kind(elem)}s, got {v!r}")
            return [_type_ok(elem, v) for v in value]
        return value
    if default is None:
        return value
    ok = _type_ok(default, value)
    if ok is None:
        raise SpaceFileError(source, where, f"expected {kind(default)}, got {kind(value)} {value!r}")
    return ok


def _type_ok(default: Any, value: Any) -> Any:
    if isinstance(default, bool) or isinstance(value, bool):
        return value if isinstance(default, bool) and isinstance(value, bool) else None
    if isinstance(default, float) and isinstance(value, (int, float)):
        return float(value)
    if isinstance(default, int) and isinstance(value, int):
        return value
    if isinstance(default, str) and isinstance(value, str):
        return value
    if isinstance(default, dict) and isinstance(value, dict):
        return value
    return None


def _singular(kind: str) -> str:
    """``blocks`` -> ``block``; ``zero_cost`` names one proxy, not a plural."""
    return "zero-cost proxy" if kind == "zero_cost" else kind[:-1]


def _core_blocks() -> dict[str, Any]:
    from searchcore.arch.build import CORE_BLOCKS

    return CORE_BLOCKS


def _env_list(var: str) -> set[str]:
    return {p.strip() for p in os.environ.get(var, "").split(",") if p.strip()}


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _trace_write(line: str) -> None:
    import sys

    print(f"[searchcore trace] {line}", file=sys.stderr)


_HOST: PluginHost | None = None


def configure(extra_modules: Iterable[str] = (), disabled: Iterable[str] = (), trace: bool | None = None) -> PluginHost:
    """(Re)load plugins for this process; the CLI calls this with --plugin/--disable."""
    global _HOST
    _HOST = PluginHost(extra_modules, disabled, trace=trace)
    return _HOST


def get_host() -> PluginHost:
    """The process-wide host, loaded lazily on first use (never at import)."""
    return _HOST if _HOST is not None else configure()


__all__ = ["PluginHost", "PluginInfo", "configure", "get_host"]
