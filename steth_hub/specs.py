"""Plugin specs: the small frozen records a plugin hands to the registry.

A spec names a plugin, says in one line what it does, and points to its factory
as an import string (``"package.module:attribute"``). The factory is imported only
when the plugin is used, so listing plugins never imports torch, transformers,
diffusers, gradio or flwr.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Any, ClassVar

from steth_hub.errors import PluginError

#: The five kinds of plugins, in pipeline order, with the hook that registers each.
KINDS: dict[str, str] = {
    "preprocessor": "register_preprocessors",
    "feature_extractor": "register_feature_extractors",
    "classifier": "register_classifiers",
    "generator": "register_generators",
    "explainer": "register_explainers",
}


@dataclass(frozen=True)
class PluginSpec:
    """What a plugin registers: a name, a one-line summary and a lazily imported factory.

    Attributes:
        name: unique within its kind, lower case with dashes (``"densenet201"``).
        summary: one line shown by ``steth plugins``.
        factory: ``"package.module:attribute"``; imported only when the plugin is used.
        requires: import names of the packages the factory needs (``("torch", "timm")``);
            checked before the import so a missing one gives an error that says what to install.
        extra: the ``steth-hub`` extra that installs ``requires`` (``"train"``), used in that error.
        options: free-form, kind-specific facts (for example the feature extractor a classifier uses).
    """

    name: str
    summary: str
    factory: str
    requires: tuple[str, ...] = ()
    extra: str | None = None
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    kind: ClassVar[str] = "plugin"

    def __post_init__(self) -> None:
        if not self.name or self.name != self.name.strip() or " " in self.name:
            raise PluginError(
                f"invalid {self.kind} name {self.name!r}",
                fix="use a non-empty name without spaces, e.g. 'my-classifier'",
            )
        if ":" not in self.factory:
            raise PluginError(
                f"{self.kind} {self.name!r}: factory {self.factory!r} is not 'module:attribute'",
                fix="give the factory as an import string, e.g. 'my_pkg.model:MyClassifier'",
            )
        if isinstance(self.requires, str):  # a common slip: requires="torch"
            object.__setattr__(self, "requires", (self.requires,))

    def missing_requirements(self) -> list[str]:
        """The import names in ``requires`` that are not installed (nothing is imported)."""
        return [mod for mod in self.requires if importlib.util.find_spec(mod) is None]

    def load(self) -> Any:
        """Import and return the factory; a missing requirement raises an actionable error."""
        missing = self.missing_requirements()
        if missing:
            how = f"pip install 'steth-hub[{self.extra}]'" if self.extra else "pip install " + " ".join(missing)
            raise PluginError(
                f"{self.kind} {self.name!r} needs {', '.join(missing)}, which is not installed",
                fix=how,
            )
        module_name, _, attr = self.factory.partition(":")
        try:
            module = importlib.import_module(module_name)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # report the plugin, not a bare traceback (SystemExit too)
            raise PluginError(
                f"{self.kind} {self.name!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}",
                fix="reinstall the plugin's distribution or check its dependencies",
            ) from exc
        obj: Any = module
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError as exc:
                raise PluginError(
                    f"{self.kind} {self.name!r}: {module_name!r} has no attribute {attr!r}",
                    fix="fix the factory string in the plugin's spec",
                ) from exc
        return obj

    def create(self, *args: Any, **kwargs: Any) -> Any:
        """Load the factory and call it."""
        return self.load()(*args, **kwargs)


@dataclass(frozen=True)
class PreprocessorSpec(PluginSpec):
    """A preprocessing step. Its factory takes keyword parameters and returns a callable
    ``step(clips: list[Clip]) -> list[Clip]`` that may raise ``RecordingRejected``."""

    kind: ClassVar[str] = "preprocessor"


@dataclass(frozen=True)
class FeatureExtractorSpec(PluginSpec):
    """A feature extractor. Its factory returns an object with
    ``__call__(waveforms, sample_rate) -> torch.Tensor`` (a batch of features)."""

    kind: ClassVar[str] = "feature_extractor"


@dataclass(frozen=True)
class ClassifierSpec(PluginSpec):
    """A classifier. Its factory is a ``steth_hub.classifier.Classifier`` subclass."""

    kind: ClassVar[str] = "classifier"


@dataclass(frozen=True)
class GeneratorSpec(PluginSpec):
    """A generator of synthetic recordings. Its factory returns an object with
    ``generate(prompt: str, seconds: float, n: int) -> list[Recording]``."""

    kind: ClassVar[str] = "generator"


@dataclass(frozen=True)
class ExplainerSpec(PluginSpec):
    """An explainer. Its factory returns an object with
    ``explain(classifier, waveforms, target=1) -> steth_hub.explanation.ClipMaps``;
    ``options["classifiers"]`` lists the classifier names it is made for, or ``options["needs"]``
    the classifier methods it relies on (``["input_grid"]``, ``["input_grid", "gradcam_layer"]``):
    then every classifier that declares them is supported (neither: any classifier)."""

    kind: ClassVar[str] = "explainer"


SPEC_TYPES: dict[str, type[PluginSpec]] = {
    cls.kind: cls
    for cls in (PreprocessorSpec, FeatureExtractorSpec, ClassifierSpec, GeneratorSpec, ExplainerSpec)
}
