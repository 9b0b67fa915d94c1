"""Errors a user can act on: what failed, on which file or plugin, and what to do.

Every error steth-hub raises on purpose is a :class:`StethError`. It carries the
file (or plugin, or config) it is about and a one-line fix. The CLI prints these
without a traceback and goes on with the rest of a batch where that makes sense.
"""

from __future__ import annotations

import os


class StethError(Exception):
    """Base class: ``message``, the ``path`` it concerns (optional) and a ``fix``."""

    #: short machine-readable reason, used in QC reports and JSON output
    code: str = "error"

    def __init__(self, message: str, *, path: str | os.PathLike | None = None, fix: str | None = None,
                 code: str | None = None):
        self.message = message
        self.path = os.fspath(path) if path is not None else None
        self.fix = fix
        if code is not None:
            self.code = code
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}" if self.path else self.message
        if self.fix:
            text += f" (fix: {self.fix})"
        return text

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "path": self.path, "fix": self.fix}


class PluginError(StethError):
    """A plugin failed to load, is misdeclared, or is missing a dependency."""

    code = "plugin"


class UnknownPluginError(PluginError, LookupError):
    """A plugin name that no installed plugin registered."""

    code = "unknown-plugin"


class PluginConflictError(PluginError):
    """Two distributions registered the same name for the same kind of plugin."""

    code = "plugin-conflict"


class ConfigError(StethError, ValueError):
    """A bad configuration value or file."""

    code = "config"


class AudioError(StethError):
    """A recording that cannot be used: it does not decode, is empty, silent, not finite, too long..."""

    code = "audio"


class RecordingRejected(StethError):
    """A preprocessing step refused a recording (too short, clipped, ...). ``code`` says which rule."""

    code = "rejected"


class CorpusError(StethError):
    """A corpus folder, manifest or saved corpus that cannot be used."""

    code = "corpus"


class ModelError(StethError):
    """A model that cannot be loaded or saved (missing files, unsafe format, missing plugin)."""

    code = "model"
