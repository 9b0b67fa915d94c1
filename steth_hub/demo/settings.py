"""What the demo page enforces and says: its limits, their ``STETH_DEMO_*`` variables, its texts."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from steth_hub.errors import ConfigError

#: longest recording accepted, in seconds (checked from the file's header)
DEFAULT_MAX_SECONDS = 60.0
#: largest upload accepted, in bytes (checked before decoding)
DEFAULT_MAX_BYTES = 20 * 2**20
#: requests screened at the same time (the models run on the CPU)
DEFAULT_CONCURRENCY = 1
#: requests that may wait in the queue; more are turned away with a "queue full" message
DEFAULT_QUEUE_SIZE = 32
#: uploaded recordings are deleted this long after they arrive (seconds)
DEFAULT_KEEP_UPLOADS_S = 3600
#: the example recordings shipped with the package (offered with one click)
EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"

TITLE = "steth-hub: asthma screening support from breath sounds"
DISCLAIMER = ("**Screening support, not a diagnosis.** The result says whether the recording sounds like "
              "the asthma recordings the model learned from. Only a clinician can diagnose asthma; "
              "do not start, change or stop any treatment because of this page.")
EXPLAIN_LABEL = "Show where the model looked (the explanation map: slower, loads the explainer)"
PATIENT_NOTE = ("Optional. Shown with the result and saved in the JSON; **not** used by the model, "
                "which hears only the audio.")
#: the note for a model that reads the facts (a vision-language classifier: they are written into its prompt)
PATIENT_NOTE_PROMPT = ("Optional. **This model reads them:** sex, age and the recording site are written into its "
                       "prompt next to the spectrogram, so they are part of its input and can change its result; "
                       "a fact not given is left out, never guessed. The result says which went in, and the JSON "
                       "keeps them.")


@dataclass(frozen=True)
class DemoSettings:
    """The limits the page enforces (see :func:`build_app`)."""

    max_seconds: float = DEFAULT_MAX_SECONDS
    max_bytes: int = DEFAULT_MAX_BYTES
    concurrency: int = DEFAULT_CONCURRENCY
    queue_size: int = DEFAULT_QUEUE_SIZE
    keep_uploads_s: int = DEFAULT_KEEP_UPLOADS_S

    def __post_init__(self) -> None:
        if not self.max_seconds > 0:
            raise ConfigError(f"max_seconds must be positive, got {self.max_seconds}", fix="pass e.g. --max-seconds 60")
        if not self.max_bytes > 0:
            raise ConfigError(f"max_bytes must be positive, got {self.max_bytes}", fix="pass e.g. --max-mb 20")
        if self.concurrency < 1 or self.queue_size < 1:
            raise ConfigError("concurrency and queue_size must be at least 1", fix="pass positive numbers")

    def describe(self) -> str:
        return f"Recordings up to {_mib(self.max_bytes)} and {self.max_seconds:g} s (WAV, FLAC, OGG or MP3)."


def _mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.3g} MiB"


#: environment variables read by :func:`settings_from_env` (a Space sets them as its variables)
ENV_PREFIX = "STETH_DEMO_"


def settings_from_env(environ: Mapping[str, str] | None = None) -> dict:
    """:func:`build_app` keyword arguments from ``STETH_DEMO_*`` variables, for a Space's settings.

    ``STETH_DEMO_MODELS`` (comma-separated Hub names or folders; default the embedded model),
    ``STETH_DEMO_MAX_SECONDS``, ``STETH_DEMO_MAX_MB``, ``STETH_DEMO_CONCURRENCY``,
    ``STETH_DEMO_QUEUE_SIZE``. A value that is not a number is a :class:`~steth_hub.errors.ConfigError`
    naming the variable.
    """
    env = os.environ if environ is None else environ
    kwargs: dict[str, Any] = {}
    models = [m.strip() for m in env.get(f"{ENV_PREFIX}MODELS", "").split(",") if m.strip()]
    if models:
        kwargs["models"] = models
    numbers = {"MAX_SECONDS": ("max_seconds", float, 1.0), "MAX_MB": ("max_bytes", float, 2.0**20),
               "CONCURRENCY": ("concurrency", int, 1), "QUEUE_SIZE": ("queue_size", int, 1)}
    for suffix, (key, kind, scale) in numbers.items():
        raw = env.get(ENV_PREFIX + suffix, "").strip()
        if not raw:
            continue
        try:
            value = kind(raw)
        except ValueError:
            raise ConfigError(f"{ENV_PREFIX}{suffix}={raw!r} is not a number",
                              fix=f"set {ENV_PREFIX}{suffix} to a {'whole ' if kind is int else ''}number") from None
        kwargs[key] = int(value * scale) if key == "max_bytes" else value
    return kwargs
