"""The catalogue of models a demo page offers: each listed with its plugin, loaded once on first use
(the light ONNX runtime where the model has an export), and its torch form loaded only for a map."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from steth_hub.errors import ModelError, StethError
from steth_hub.hub import DEFAULT_MODEL  # the embedded model, offered first

if TYPE_CHECKING:  # pragma: no cover
    from steth_hub.classifier import Classifier

log = logging.getLogger(__name__)


@dataclass
class ModelEntry:
    """One model the page offers: its name in the selector, its plugin and where it comes from."""

    name: str
    source: Any  # a Hub name, a folder, or a loaded Classifier
    plugin: str | None = None
    note: str = ""
    error: StethError | None = None

    @property
    def label(self) -> str:
        if self.error is not None:
            return f"{self.name} (unavailable)"
        detail = ", ".join(x for x in (self.plugin, self.note) if x)
        return f"{self.name} ({detail})" if detail else self.name


class ModelCatalog:
    """The models the selector lists, each loaded once (on first use) and then kept.

    ``models`` holds Hub names (``"steth/ast-asthma"``), model folders, or already loaded
    :class:`~steth_hub.classifier.Classifier` objects. A model that cannot be found stays in
    the list as unavailable, so the page still starts and says why when it is chosen.
    """

    def __init__(self, models: Sequence[Any] | Mapping[str, Any] | None = None):
        items: list[tuple[str | None, Any]]
        if models is None:
            items = [(None, DEFAULT_MODEL)]
        elif isinstance(models, Mapping):
            items = list(models.items())
        elif isinstance(models, (str, os.PathLike)):
            items = [(None, models)]
        else:
            items = [(None, m) for m in models]
        self.entries: dict[str, ModelEntry] = {}
        self._loaded: dict[str, Classifier] = {}
        self._explainable: dict[str, Classifier] = {}
        self._lock = threading.Lock()
        for name, source in items:
            entry = self._describe(name, source)
            base, n = entry.name, 2
            while entry.name in self.entries:
                entry.name, n = f"{base} #{n}", n + 1
            self.entries[entry.name] = entry

    @staticmethod
    def _describe(name: str | None, source: Any) -> ModelEntry:
        from steth_hub.classifier import Classifier

        if isinstance(source, Classifier):
            return ModelEntry(name or source.plugin_name, source, plugin=source.plugin_name, note="in memory")
        text = os.fspath(source)
        is_folder = Path(text).expanduser().is_dir()
        # a folder is shown by its own name: the page does not reveal the server's paths
        entry = ModelEntry(name or (Path(text).expanduser().resolve().name if is_folder else text), source)
        if text == DEFAULT_MODEL:
            entry.note = "embedded default"
        try:
            entry.plugin = _plugin_of(source)
        except StethError as exc:
            entry.error = exc
            log.warning("model %s is not available: %s", text, exc)
        return entry

    @property
    def default(self) -> str | None:
        """The first model that is available (else the first listed)."""
        for name, entry in self.entries.items():
            if entry.error is None:
                return name
        return next(iter(self.entries), None)

    def choices(self) -> list[tuple[str, str]]:
        """``(label, name)`` pairs for a dropdown."""
        return [(entry.label, name) for name, entry in self.entries.items()]

    def get(self, name: str | None) -> "Classifier":
        """The loaded model called ``name`` (loading it the first time); errors say what to do."""
        name = name or self.default
        entry = self.entries.get(name or "")
        if entry is None:
            raise ModelError(f"no model named {name!r} on this page",
                             fix=f"choose one of: {', '.join(self.entries) or 'none'}")
        if entry.error is not None:
            raise ModelError(f"model {name!r} is not available: {entry.error.message}", fix=entry.error.fix)
        with self._lock:  # two visitors asking at once load it once
            if name not in self._loaded:
                from steth_hub.screening import load_model

                try:
                    self._loaded[name] = load_model(entry.source)
                except StethError as exc:
                    raise ModelError(f"model {name!r} cannot be loaded: {exc.message}", fix=exc.fix) from exc
            return self._loaded[name]

    def uses_facts(self, name: str | None) -> bool:
        """Whether model ``name`` reads the patient facts (a VLM writes them into its prompt): asked of the
        loaded model when it is loaded, else of its plugin's class (no weights are loaded, no torch imported).
        An unavailable model reads nothing."""
        from steth_hub.classifier import Classifier

        name = name or self.default
        entry = self.entries.get(name or "")
        if entry is None or entry.error is not None:
            return False
        loaded = self._loaded.get(name)
        if loaded is not None:
            return reads_facts(loaded)
        if isinstance(entry.source, Classifier):
            return reads_facts(entry.source)
        try:
            from steth_hub.registry import get_registry

            return reads_facts(get_registry().get("classifier", entry.plugin).load())
        except Exception as exc:  # an unknown plugin fails where the model loads, with its own message
            log.debug("model %s: plugin %s not found: %s", name, entry.plugin, exc)
            return False

    def explainable(self, name: str | None) -> "Classifier":
        """The torch form of model ``name``, which explainers need (loaded the first time it is asked for:
        this is what imports torch). A model screened by the light runtime is reloaded from its folder."""
        name = name or self.default
        model = self.get(name)
        with self._lock:
            if name not in self._explainable:
                import importlib.util

                from steth_hub.screening import load_model

                if importlib.util.find_spec("torch") is None:
                    raise ModelError("the explanation map needs torch, which is not installed here",
                                     fix="pip install 'steth-hub[explain]' (screening works without it)")
                self._explainable[name] = load_model(model, runtime="torch")
            return self._explainable[name]


def _plugin_of(source: str | os.PathLike) -> str:
    """The classifier plugin a model folder or name needs, read from ``steth.json`` without loading it
    (a plain checkpoint without one: the plugin that declares it adopts its ``model_type``)."""
    from steth_hub.hub import adoption_metadata, resolve
    from steth_hub.model_folder import STETH_METADATA, read_metadata

    folder = resolve(source)
    if (folder / STETH_METADATA).is_file():
        return str(read_metadata(folder)["plugin"])
    return str(adoption_metadata(folder)["plugin"])


def reads_facts(model) -> bool:
    """Whether ``model`` (a loaded classifier or a classifier class) writes the patient facts into its input:
    a vision-language classifier's prompt (:func:`steth_builtin.vlm_screen.uses_facts`)."""
    try:
        from steth_builtin.vlm_screen import uses_facts
    except ImportError:  # the built-in plugins are not installed: the same test
        return callable(getattr(model, "register_recording", None))
    return uses_facts(model)


def installed_plugins(kind: str) -> list[str]:
    """Names of the installed plugins of ``kind`` (``"classifier"``, ``"explainer"``)."""
    from steth_hub.registry import get_registry

    return get_registry().names(kind)
