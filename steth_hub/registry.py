"""The plugin registry: finds plugins through the ``steth_hub`` entry-point group.

Built-in plugins (``plugins/steth_builtin``) are found through the same entry points as
a contributor's. Loading happens once, on first use, and never imports heavy libraries:
plugins register :mod:`steth_hub.specs` records whose code is imported only when used.

Failure handling:

* a plugin that fails to import, declares a hook implementation that matches no hook,
  or raises inside a hook is recorded as failed (plugin, distribution, reason) and
  everything else keeps working; ``STETH_HUB_STRICT_PLUGINS=1`` makes it an error;
* two plugins claiming one name in one kind is an error naming both distributions
  (raised when that name is asked for, and at load time in strict mode);
* asking for an unknown name lists the known ones.

``STETH_HUB_PLUGINS=a,b`` loads only the entry points (or distributions) named.
"""

from __future__ import annotations

import difflib
import logging
import os
import sys
import threading
from dataclasses import dataclass
from importlib import metadata
from typing import Iterable

import pluggy

import steth_hub.hookspecs as hookspecs
from steth_hub.errors import PluginConflictError, PluginError, UnknownPluginError
from steth_hub.specs import KINDS, SPEC_TYPES, PluginSpec

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "steth_hub"
_IMPL_ATTR = f"{hookspecs.PROJECT}_impl"


@dataclass(frozen=True)
class PluginRecord:
    """One entry point as loaded: ``status`` is ``"ok"`` or ``"failed"`` (then ``error`` says why)."""

    name: str
    distribution: str
    module: str
    status: str = "ok"
    error: str | None = None


@dataclass(frozen=True)
class Registration:
    """A spec together with the plugin and distribution that registered it."""

    spec: PluginSpec
    plugin: str
    distribution: str

    @property
    def kind(self) -> str:
        return self.spec.kind


#: the distribution that ships the built-in plugins (plugins/steth_builtin)
BUILTIN_DISTRIBUTION = "steth-hub"


def _is_builtin(distribution: str) -> bool:
    return (distribution or "").replace("_", "-").lower() == BUILTIN_DISTRIBUTION


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _distribution_of(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    if dist is not None and getattr(dist, "name", None):
        return dist.name
    return ep.value.split(":")[0].split(".")[0]


class Registry:
    """Plugins of every kind, loaded from entry points once.

    Args:
        entry_points: the entry points to load; by default those of the ``steth_hub`` group.
        strict: raise on the first failed plugin or conflict; default from
            ``STETH_HUB_STRICT_PLUGINS``.
        only: load only these entry-point or distribution names; default from ``STETH_HUB_PLUGINS``.
    """

    def __init__(self, entry_points: Iterable[metadata.EntryPoint] | None = None, *,
                 strict: bool | None = None, only: Iterable[str] | None = None):
        self._entry_points = None if entry_points is None else list(entry_points)
        self.strict = _truthy(os.environ.get("STETH_HUB_STRICT_PLUGINS")) if strict is None else strict
        if only is None and os.environ.get("STETH_HUB_PLUGINS"):
            only = [x.strip() for x in os.environ["STETH_HUB_PLUGINS"].split(",") if x.strip()]
        self.only = set(only) if only is not None else None
        self._lock = threading.Lock()
        self._loaded = False
        self._plugins: list[PluginRecord] = []
        self._by_kind: dict[str, dict[str, list[Registration]]] = {kind: {} for kind in KINDS}

    # ------------------------------------------------------------------ loading
    def _discover(self) -> list[metadata.EntryPoint]:
        if self._entry_points is not None:
            eps = self._entry_points
        else:
            eps = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
        seen: set[tuple[str, str, str]] = set()
        unique = []
        for ep in eps:  # one distribution found twice on sys.path is loaded once
            key = (_distribution_of(ep), ep.name, ep.value)
            if key not in seen:
                seen.add(key)
                unique.append(ep)
        if self.only is not None:
            unique = [ep for ep in unique if ep.name in self.only or _distribution_of(ep) in self.only]
        return unique

    def load(self) -> "Registry":
        """Load every entry point once (thread-safe); later calls do nothing."""
        with self._lock:
            if not self._loaded:
                self._load()
                self._loaded = True
        return self

    def _fail(self, record: PluginRecord, reason: str) -> None:
        failed = PluginRecord(record.name, record.distribution, record.module, "failed", reason)
        self._plugins.append(failed)
        log.warning("steth-hub plugin %r (distribution %r) failed: %s", record.name, record.distribution, reason)
        if _is_builtin(record.distribution):  # not a third-party problem: steth-hub itself is broken
            print(f"WARNING: steth-hub installation bug: built-in plugin {record.name!r} failed to load ({reason}); "
                  "its models and steps are unavailable. Reinstall steth-hub (pip install --force-reinstall "
                  "steth-hub, or pip install -e . in a clone) and report it if it persists.", file=sys.stderr)
        if self.strict:
            raise PluginError(
                f"plugin {record.name!r} from distribution {record.distribution!r} failed: {reason}",
                fix="fix or uninstall that plugin, or unset STETH_HUB_STRICT_PLUGINS to skip it",
            )

    def _load(self) -> None:
        for ep in self._discover():
            record = PluginRecord(ep.name, _distribution_of(ep), ep.value)
            try:
                module = ep.load()
            except KeyboardInterrupt:  # a real Ctrl-C stops the program
                raise
            except BaseException as exc:  # any import failure (SystemExit too) is reported, never fatal
                self._fail(record, f"import failed: {type(exc).__name__}: {exc}")
                continue
            problem = _check_hook_names(module)
            if problem:
                self._fail(record, problem)
                continue
            pm = pluggy.PluginManager(hookspecs.PROJECT)
            pm.add_hookspecs(hookspecs)
            try:
                pm.register(module, name=ep.name)
                pm.check_pending()
            except KeyboardInterrupt:
                raise
            except BaseException as exc:
                self._fail(record, f"invalid hook implementation: {exc}")
                continue
            collected: list[Registration] = []
            try:
                for kind, hook_name in KINDS.items():
                    for impl in getattr(pm.hook, hook_name).get_hookimpls():
                        register = _make_register(kind, collected, record)
                        args = {"register": register}
                        impl.function(*[args[name] for name in impl.argnames])
            except KeyboardInterrupt:
                raise
            except BaseException as exc:
                self._fail(record, f"{type(exc).__name__} while registering: {exc}")
                continue
            self._plugins.append(record)
            for reg in collected:
                self._by_kind[reg.kind].setdefault(reg.spec.name, []).append(reg)
        if self.strict:
            for kind in KINDS:
                for name in self._by_kind[kind]:
                    self._check_conflict(kind, name)

    # ------------------------------------------------------------------ queries
    @property
    def plugins(self) -> list[PluginRecord]:
        """Every entry point that was loaded or tried, with its status."""
        self.load()
        return list(self._plugins)

    @property
    def failures(self) -> list[PluginRecord]:
        return [p for p in self.plugins if p.status != "ok"]

    def registrations(self, kind: str | None = None) -> list[Registration]:
        """Every registration (conflicting ones included), optionally of one kind."""
        self.load()
        kinds = [_check_kind(kind)] if kind else list(KINDS)
        return [reg for k in kinds for regs in self._by_kind[k].values() for reg in regs]

    def names(self, kind: str) -> list[str]:
        """The sorted names registered for ``kind``."""
        self.load()
        return sorted(self._by_kind[_check_kind(kind)])

    def _check_conflict(self, kind: str, name: str) -> None:
        regs = self._by_kind[kind][name]
        if len(regs) > 1:
            claimants = ", ".join(f"{r.distribution!r} (plugin {r.plugin!r})" for r in regs)
            raise PluginConflictError(
                f"{kind} name {name!r} is registered by more than one plugin: {claimants}",
                fix="uninstall one of these distributions, or load one with STETH_HUB_PLUGINS",
            )

    def get(self, kind: str, name: str) -> PluginSpec:
        """The spec registered as ``name`` for ``kind``; unknown or conflicting names raise."""
        self.load()
        kind = _check_kind(kind)
        if name not in self._by_kind[kind]:
            known = sorted(self._by_kind[kind])
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UnknownPluginError(
                f"no {kind} named {name!r}{hint} Known {kind}s: {', '.join(known) or 'none'}",
                fix="run `steth plugins` to list installed plugins, or install the plugin's distribution",
            )
        self._check_conflict(kind, name)
        return self._by_kind[kind][name][0].spec

    def create(self, kind: str, name: str, *args, **kwargs):
        """Shorthand for ``get(kind, name).create(*args, **kwargs)``."""
        return self.get(kind, name).create(*args, **kwargs)

    def rows(self) -> list[dict]:
        """One row per registered spec and per failed plugin, for ``steth plugins``."""
        self.load()
        rows = []
        for kind in KINDS:
            for name, regs in sorted(self._by_kind[kind].items()):
                for reg in regs:
                    missing = reg.spec.missing_requirements()
                    if len(regs) > 1:
                        others = ", ".join(r.distribution for r in regs if r is not reg)
                        status = f"conflict: also registered by {others}"
                    elif missing:
                        extra = f" (pip install 'steth-hub[{reg.spec.extra}]')" if reg.spec.extra else ""
                        status = f"needs {', '.join(missing)}{extra}"
                    else:
                        status = "ok"
                    rows.append({"kind": kind, "name": name, "distribution": reg.distribution,
                                 "plugin": reg.plugin, "summary": reg.spec.summary, "status": status})
        for rec in self.failures:
            rows.append({"kind": "-", "name": rec.name, "distribution": rec.distribution,
                         "plugin": rec.name, "summary": rec.module, "status": f"failed: {rec.error}"})
        return rows


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise UnknownPluginError(f"unknown plugin kind {kind!r}; kinds: {', '.join(KINDS)}")
    return kind


def _check_hook_names(module) -> str | None:
    """A misspelled or unmarked hook implementation is an error, not silence."""
    hooks = set(KINDS.values())
    for attr in dir(module):
        obj = getattr(module, attr, None)
        if not callable(obj):
            continue
        marked = getattr(obj, _IMPL_ATTR, None) is not None
        if marked and attr not in hooks:
            close = difflib.get_close_matches(attr, sorted(hooks), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            return f"hook implementation {attr!r} matches no steth_hub hook{hint}"
        if not marked and attr in hooks and getattr(obj, "__module__", None) == module.__name__:
            return f"{attr!r} is not marked with @steth_hub.hookimpl, so it would never be called"
    return None


def _make_register(kind: str, collected: list[Registration], record: PluginRecord):
    spec_type = SPEC_TYPES[kind]

    def register(spec: PluginSpec) -> None:
        if not isinstance(spec, spec_type):
            raise PluginError(
                f"plugin {record.name!r} registered a {type(spec).__name__} through the {kind} hook",
                fix=f"register a steth_hub.specs.{spec_type.__name__} there",
            )
        if any(r.spec.name == spec.name for r in collected if r.kind == kind):
            raise PluginError(f"plugin {record.name!r} registered {kind} {spec.name!r} twice")
        collected.append(Registration(spec, record.name, record.distribution))

    return register


_REGISTRY: Registry | None = None
_REGISTRY_LOCK = threading.Lock()


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _REGISTRY
    with _REGISTRY_LOCK:
        if _REGISTRY is None:
            _REGISTRY = Registry()
    return _REGISTRY.load()


def reset_registry() -> None:
    """Forget the loaded plugins (tests, or after installing a plugin in a running process)."""
    global _REGISTRY
    with _REGISTRY_LOCK:
        _REGISTRY = None
