"""Where a recording becomes clean clips: presets, the step pipeline and the built-in steps.

A preprocessing **step** is a preprocessor plugin: its factory takes keyword parameters
and returns ``step(clips: list[Clip]) -> list[Clip]``. A recording enters as one clip
spanning it (``start`` 0); a step that refuses it raises
:class:`~steth_hub.errors.RecordingRejected` with a ``code`` (``too-short``, ``clipped``...).

A :class:`Preset` is a named, ordered list of ``(step name, params)``. Built-in presets
are defined here (so they work from an installed wheel) and mirrored, with comments, in
``configs/presets/*.yaml`` (a test checks that the two agree):

``excerpt-10s`` (the default)
    fits 10 s excerpts such as the shared data: at least 6 s, clipping rejected, 0.5 s
    trimmed from each end, band-limited to 2 kHz, resampled to 16 kHz, three 5 s clips
    with 60 % overlap (the 9 s left, exactly), each peak-normalised.
``paper``
    the paper's values: at least 14 s, clipping rejected (with the working detector; the
    paper's rule is ``clipping: {method: paper-p95}`` and rejects everything), 2 s trimmed
    from each end, resampled to 16 kHz, 5 s clips with 50 % overlap (an assumption: the
    paper does not give it), each peak-normalised.

Resampling comes before cutting in both (the paper resamples last): resampling the whole
recording once avoids filter transients at every clip's edges and gives every clip the
same length; normalisation is a gain, so the order does not change what it does.

Why ``bandlimit`` is in the default: in the shared data all 75 asthma recordings are
sampled at 4 kHz (nothing above 2 kHz) while 48 non-asthma ones (36 of the 42 ICBHI, 12
KAUH) are 44.1 kHz. A model fed full-band audio can learn "energy above 2 kHz means not
asthma": the sample rate, not the lungs. Low-passing every recording to the common 2 kHz band removes that shortcut. See
docs/preprocessing.md.

:class:`Preprocessor` runs a preset on one recording; :func:`preprocess_corpus` runs it
over a corpus, skipping (and reporting) rejected recordings; :func:`cached_clips` keeps the
result with the corpus (``CORPUS/clips/<preset>/``) and reuses it while corpus and preset
are unchanged.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from steth_hub.audio import Recording, decode, resample
from steth_hub.clips import Clip, ClipSet, cut
from steth_hub.fileio import read_yaml_or_json
from steth_hub.errors import (
    AudioError,
    ConfigError,
    CorpusError,
    PluginError,
    RecordingRejected,
    StethError,
    UnknownPluginError,
)

log = logging.getLogger(__name__)

DEFAULT_PRESET = "excerpt-10s"


def _excerpt_steps(floor_db: float | None = None, normalise: str = "peak") -> list[dict]:
    """The steps of the excerpt-10s family: >= 6 s, plateau clipping check, 0.5 s trimmed, an optional
    common noise floor ``floor_db`` below the recording, 2 kHz band, 16 kHz, 5 s clips with 60%
    overlap, each clip normalised by ``normalise`` (peak or rms)."""
    return [
        {"min-duration": {"seconds": 6.0}},
        {"clipping": {"method": "plateau"}},
        {"trim": {"seconds": 0.5}},
        *([{"noise-floor": {"snr_db": floor_db}}] if floor_db is not None else []),
        {"bandlimit": {"max_hz": 2000.0}},
        {"resample": {"sample_rate": 16000}},
        {"cut": {"seconds": 5.0, "overlap": 60.0}},
        {"normalise": {"method": normalise}},
    ]


#: The built-in presets (canonical; configs/presets/*.yaml mirror them).
BUILTIN_PRESETS: dict[str, dict] = {
    "excerpt-10s": {
        "description": ("Fits 10 s excerpts (the shared KAUH/ICBHI data): >= 6 s, clipping rejected (plateau "
                        "detector), 0.5 s trimmed each end, band-limited to 2 kHz so the sample rate cannot "
                        "stand in for the label, 16 kHz, three 5 s clips with 60% overlap, peak-normalised."),
        "steps": _excerpt_steps(),
    },
    "excerpt-10s-floor": {
        "description": ("excerpt-10s with a common noise floor: the same white noise 35 dB below each "
                        "recording's RMS is added before band-limiting, so how silent a recording chain's "
                        "quietest moments are (a noise gate, a digital filter, 8-bit storage) cannot stand in "
                        "for the label. The default model's preset."),
        "steps": _excerpt_steps(floor_db=35.0),
    },
    "excerpt-10s-floor20": {
        "description": ("excerpt-10s with a loud common floor and RMS levels: the same white noise 20 dB below "
                        "each recording's RMS is added before band-limiting, so noise 30 dB or more below the "
                        "signal (8-bit storage of most recordings, a noisier recorder) barely moves it, and each "
                        "clip is scaled to an RMS of 0.1 (a few clipped peaks cannot change its level)."),
        "steps": _excerpt_steps(floor_db=20.0, normalise="rms"),
    },
    "excerpt-10s-floor-rms": {
        "description": ("excerpt-10s-floor with RMS levels: the same white noise 35 dB below each recording's "
                        "RMS before band-limiting, and each clip scaled to an RMS of 0.1, so a few clipped "
                        "peaks (a recording made 6 dB too loud) cannot change a clip's level."),
        "steps": _excerpt_steps(floor_db=35.0, normalise="rms"),
    },
    "paper": {
        "description": ("The paper's values: >= 14 s, clipping rejected (with the working plateau detector: the "
                        "paper's p95 rule, method paper-p95, rejects every recording), 2 s trimmed each end, "
                        "16 kHz, 5 s clips with 50% overlap (assumed: the paper does not state it), "
                        "peak-normalised. Drops every 10 s excerpt."),
        "steps": [
            {"min-duration": {"seconds": 14.0}},
            {"clipping": {"method": "plateau"}},
            {"trim": {"seconds": 2.0}},
            {"resample": {"sample_rate": 16000}},
            {"cut": {"seconds": 5.0, "overlap": 50.0}},
            {"normalise": {"method": "peak"}},
        ],
    },
}


# =========================================================================== steps
def _reject_short(clip: Clip, message: str, fix: str) -> RecordingRejected:
    return RecordingRejected(message, path=clip.recording_id, code="too-short", fix=fix)


class MinDuration:
    """Step ``min-duration``: refuse recordings shorter than ``seconds``."""

    def __init__(self, seconds: float = 6.0):
        if float(seconds) < 0:
            raise ConfigError(f"min-duration seconds must be >= 0, got {seconds}")
        self.params = {"seconds": float(seconds)}

    def __call__(self, clips: list[Clip]) -> list[Clip]:
        kept = [c for c in clips if c.duration >= self.params["seconds"]]
        if not kept:
            longest = max((c.duration for c in clips), default=0.0)
            raise _reject_short(clips[0] if clips else Clip(np.zeros(0, np.float32), 1),
                                f"recording lasts {longest:.2f} s, shorter than the preset's "
                                f"{self.params['seconds']:g} s minimum",
                                "use a longer recording, or a preset with a lower min-duration")
        return kept


class Trim:
    """Step ``trim``: cut ``seconds`` off each end (handling noise at the start and end of a recording)."""

    def __init__(self, seconds: float = 0.5):
        if float(seconds) < 0:
            raise ConfigError(f"trim seconds must be >= 0, got {seconds}")
        self.params = {"seconds": float(seconds)}

    def __call__(self, clips: list[Clip]) -> list[Clip]:
        out = []
        for clip in clips:
            n = int(round(self.params["seconds"] * clip.sample_rate))
            if len(clip.samples) <= 2 * n:
                raise _reject_short(clip, f"recording lasts {clip.duration:.2f} s, nothing is left after trimming "
                                          f"{self.params['seconds']:g} s from each end",
                                    "use a longer recording, or a preset that trims less")
            out.append(Clip(clip.samples[n:len(clip.samples) - n], clip.sample_rate, clip.recording_id,
                            clip.start + n / float(clip.sample_rate), clip.index))
        return out


class NoiseFloor:
    """Step ``noise-floor``: add white noise ``snr_db`` below the clip's RMS, the same noise every time.

    Recordings differ in how silent their quietest moments are (a recorder's noise gate, a
    stethoscope's digital filter, 8-bit storage), and a model can learn that floor instead of the
    breath sounds: then an inaudible change of the recording chain flips its decision
    (``bench/bench_robustness.py``). A common floor ``snr_db`` below the signal masks any quieter
    one. The noise comes from a fixed seed, so screening stays deterministic; put the step before
    ``bandlimit`` so the floor shares the signal's band.

    A recording stored with so few bits that its quantisation noise is louder than the floor (an
    8-bit file, or audio re-encoded from one: :func:`steth_hub.audio.quantisation_snr_db`) is
    refused (``code="degraded"``): the floor cannot mask that noise, and it moves the models'
    results (``bench/bench_robustness.py``, configs/README.md "Gentle fine-tuning").
    """

    def __init__(self, snr_db: float = 35.0, seed: int = 0):
        if not 10.0 <= float(snr_db) <= 120.0:
            raise ConfigError(f"noise-floor snr_db must be between 10 and 120 dB, got {snr_db}",
                              fix="e.g. snr_db: 35 (the floor 35 dB below the recording's RMS)")
        self.params = {"snr_db": float(snr_db), "seed": int(seed)}

    def __call__(self, clips: list[Clip]) -> list[Clip]:
        out = []
        for clip in clips:
            x = np.asarray(clip.samples, dtype=np.float32)
            self._check_resolution(clip, x)
            rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if len(x) else 0.0
            noise = np.random.default_rng(self.params["seed"]).standard_normal(len(x)).astype(np.float32)
            level = rms * 10.0 ** (-self.params["snr_db"] / 20.0)
            out.append(Clip((x + level * noise).astype(np.float32), clip.sample_rate, clip.recording_id, clip.start,
                            clip.index))
        return out

    def _check_resolution(self, clip: Clip, x: np.ndarray) -> None:
        from steth_hub.audio import quantisation_snr_db, stored_bits

        snr = quantisation_snr_db(x)  # None for empty or near-silent clips: another rule's business
        if snr is not None and snr < self.params["snr_db"]:
            raise RecordingRejected(
                f"degraded: the samples sit on the {stored_bits(x)}-bit grid, and its quantisation noise is "
                f"only {snr:.1f} dB below the recording, louder than this model's noise floor "
                f"({self.params['snr_db']:g} dB below); such noise changes the result",
                path=clip.recording_id, code="degraded",
                fix="use the original recording, or record (or export) at 16 bits or more")


def _fit_length(samples: np.ndarray, n: int) -> np.ndarray:
    """Crop or zero-pad at the end to exactly ``n`` samples (resamplers may differ by one)."""
    if len(samples) >= n:
        return np.ascontiguousarray(samples[:n], dtype=np.float32)
    return np.concatenate([samples, np.zeros(n - len(samples), np.float32)]).astype(np.float32)


class BandLimit:
    """Step ``bandlimit``: keep only content below ``max_hz``, at the clip's own sample rate.

    Resamples down to ``2 * max_hz`` and back up (soxr, via :func:`steth_hub.audio.resample`);
    a clip already sampled at ``2 * max_hz`` or less is left as it is. With ``max_hz`` 2000,
    44.1 kHz recordings end up with the same band as 4 kHz ones, so a model cannot tell the
    recording device (and with it, in the shared data, the label) from the empty upper band.
    """

    def __init__(self, max_hz: float = 2000.0):
        if float(max_hz) < 1000:
            raise ConfigError(f"bandlimit max_hz must be at least 1000 Hz, got {max_hz}",
                              fix="breath sounds need at least 1 kHz; the default is 2000")
        self.params = {"max_hz": float(max_hz)}

    def __call__(self, clips: list[Clip]) -> list[Clip]:
        low_rate = int(round(2 * self.params["max_hz"]))
        out = []
        for clip in clips:
            if clip.sample_rate <= low_rate:
                out.append(clip)
                continue
            narrow = resample(resample(clip.samples, clip.sample_rate, low_rate), low_rate, clip.sample_rate)
            out.append(Clip(_fit_length(narrow, len(clip.samples)), clip.sample_rate, clip.recording_id,
                            clip.start, clip.index))
        return out


class Resample:
    """Step ``resample``: bring every clip to ``sample_rate`` (soxr); lengths become ``round(n * new / old)``."""

    def __init__(self, sample_rate: int = 16000):
        if int(sample_rate) < 2000:
            raise ConfigError(f"resample sample_rate must be at least 2000 Hz, got {sample_rate}")
        self.params = {"sample_rate": int(sample_rate)}

    def __call__(self, clips: list[Clip]) -> list[Clip]:
        rate = self.params["sample_rate"]
        out = []
        for clip in clips:
            if clip.sample_rate == rate:
                out.append(clip)
                continue
            n = int(round(len(clip.samples) * rate / float(clip.sample_rate)))
            out.append(Clip(_fit_length(resample(clip.samples, clip.sample_rate, rate), n), rate,
                            clip.recording_id, clip.start, clip.index))
        return out


class Cut:
    """Step ``cut``: whole clips of ``seconds`` with ``overlap`` % overlap, their span centred
    (:func:`steth_hub.clips.cut`); a recording shorter than one clip is rejected (``too-short``)."""

    def __init__(self, seconds: float = 5.0, overlap: float = 50.0):
        if float(seconds) <= 0:
            raise ConfigError(f"cut seconds must be positive, got {seconds}")
        if not 0.0 <= float(overlap) < 100.0:
            raise ConfigError(f"cut overlap must be a percentage in [0, 100), got {overlap}",
                              fix="for example overlap: 50 (clips advance by half their length)")
        self.params = {"seconds": float(seconds), "overlap": float(overlap)}

    def __call__(self, clips: list[Clip]) -> list[Clip]:
        out: list[Clip] = []
        for clip in clips:
            out.extend(cut(clip, self.params["seconds"], self.params["overlap"]))
        return out


class Normalise:
    """Step ``normalise``: scale each clip to a peak of ``target`` (``peak``, default 1.0) or an
    RMS of ``target`` (``rms``, default 0.1); clips are scaled independently, so loudness (which
    depends on the stethoscope and its pressure on the chest) carries no information."""

    DEFAULT_TARGET = {"peak": 1.0, "rms": 0.1}

    def __init__(self, method: str = "peak", target: float | None = None):
        if method not in self.DEFAULT_TARGET:
            raise ConfigError(f"unknown normalise method {method!r}", fix="use 'peak' or 'rms'")
        target = self.DEFAULT_TARGET[method] if target is None else float(target)
        if target <= 0:
            raise ConfigError(f"normalise target must be positive, got {target}")
        self.params = {"method": method, "target": target}

    def __call__(self, clips: list[Clip]) -> list[Clip]:
        out = []
        for clip in clips:
            x = clip.samples.astype(np.float32)
            if self.params["method"] == "peak":
                level = float(np.max(np.abs(x))) if x.size else 0.0
            else:
                level = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0
            gain = self.params["target"] / max(level, 1e-8)
            out.append(Clip((x * gain).astype(np.float32), clip.sample_rate, clip.recording_id, clip.start,
                            clip.index))
        return out


# =========================================================================== presets
def _step_factory(name: str):
    from steth_hub.registry import get_registry

    return get_registry().get("preprocessor", name).load()


def _resolve_step(name: str, params: dict, source: str | None) -> tuple[dict, Any]:
    """Build the step once; return its full parameters (defaults filled in) and the step."""
    try:
        factory = _step_factory(name)
    except UnknownPluginError as exc:
        raise UnknownPluginError(f"preset step {name!r}: {exc.message}", path=source, fix=exc.fix) from exc
    try:
        step = factory(**params)
    except StethError as exc:
        raise ConfigError(f"preset step {name!r}: {exc.message}", path=source, fix=exc.fix) from exc
    except TypeError as exc:
        raise ConfigError(f"preset step {name!r} rejects its parameters {params}: {exc}", path=source,
                          fix=f"check the parameter names of {name!r} (docs/preprocessing.md)") from exc
    resolved = getattr(step, "params", None)
    if not isinstance(resolved, Mapping):  # a plain-function step: fill in its signature's defaults
        resolved = {}
        try:
            for pname, p in inspect.signature(factory).parameters.items():
                if p.default is not inspect.Parameter.empty and p.kind is not p.VAR_KEYWORD:
                    resolved[pname] = p.default
        except (TypeError, ValueError):
            pass
        resolved.update(params)
    if not callable(step):
        raise PluginError(f"preprocessor {name!r} returned {type(step).__name__}, which is not callable",
                          fix="its factory must return step(clips) -> clips")
    return json.loads(json.dumps(dict(resolved), default=str)), step


def _parse_step(entry: Any, source: str | None) -> tuple[str, dict]:
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], str):
        return entry[0], dict(entry[1] or {})
    if isinstance(entry, Mapping):
        if "step" in entry:
            extra = set(entry) - {"step", "params"}
            if extra:
                raise ConfigError(f"preset step {entry!r} has unknown key(s) {sorted(extra)}", path=source,
                                  fix="write a step as {step: NAME, params: {...}} or as {NAME: {...}}")
            return str(entry["step"]), dict(entry.get("params") or {})
        if len(entry) == 1:
            (name, params), = entry.items()
            if params is not None and not isinstance(params, Mapping):
                raise ConfigError(f"preset step {name!r}: parameters must be a mapping, got {params!r}",
                                  path=source, fix=f"write e.g. '- {name}: {{seconds: 5}}'")
            return str(name), dict(params or {})
    raise ConfigError(f"cannot read preset step {entry!r}", path=source,
                      fix="write each step as '- NAME: {param: value}' (e.g. '- trim: {seconds: 0.5}')")


@dataclass
class Preset:
    """A named, ordered list of preprocessing steps with their full parameters.

    Building one checks every step against the registry and fills in its defaults, so
    :meth:`to_dict` records exactly what ran (it goes into every model's ``steth.json``).

    Attributes:
        name: the preset's name.
        steps: ``[(step name, params), ...]`` in order; params are complete after construction.
        description: one paragraph on what the preset is for.
        source: the file it came from (for error messages), if any.
    """

    name: str
    steps: list = field(default_factory=list)
    description: str = ""
    source: str | None = None

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ConfigError("a preset needs a name", path=self.source, fix="add 'name: my-preset'")
        if not isinstance(self.steps, (list, tuple)) or not self.steps:
            raise ConfigError(f"preset {self.name!r} has no steps", path=self.source,
                              fix="list its steps under 'steps:' (see configs/presets/excerpt-10s.yaml)")
        resolved, built = [], []
        for entry in self.steps:
            name, params = _parse_step(entry, self.source)
            full, step = _resolve_step(name, params, self.source)
            resolved.append((name, full))
            built.append((name, step))
        self.steps = resolved
        self._built = built

    # -- derived facts ------------------------------------------------------
    def _last_param(self, step: str, key: str):
        values = [params.get(key) for name, params in self.steps if name == step]
        return values[-1] if values else None

    @property
    def sample_rate(self) -> int | None:
        """The rate clips come out at (the last ``resample`` step), or None if the preset keeps the file's."""
        rate = self._last_param("resample", "sample_rate")
        return int(rate) if rate is not None else None

    @property
    def clip_seconds(self) -> float | None:
        """The clip length (the ``cut`` step), or None when the preset does not cut."""
        seconds = self._last_param("cut", "seconds")
        return float(seconds) if seconds is not None else None

    def build(self) -> list[tuple[str, Any]]:
        """Fresh step callables, in order."""
        return [(name, _resolve_step(name, params, self.source)[1]) for name, params in self.steps]

    # -- serialising ----------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain data: name, description, steps ``[{name: params}]``, and the derived sample rate and clip length."""
        return {"name": self.name, "description": self.description,
                "steps": [{name: copy.deepcopy(params)} for name, params in self.steps],
                "sample_rate": self.sample_rate, "clip_seconds": self.clip_seconds}

    @classmethod
    def from_dict(cls, data: Mapping, *, source: str | None = None) -> "Preset":
        """Build from :meth:`to_dict` output or a YAML mapping; derived keys are checked, not trusted."""
        if not isinstance(data, Mapping):
            raise ConfigError("a preset must be a mapping with 'name' and 'steps'", path=source,
                              fix="see configs/presets/excerpt-10s.yaml")
        unknown = sorted(set(data) - {"name", "description", "steps", "sample_rate", "clip_seconds"})
        if unknown:
            raise ConfigError(f"unknown preset key(s): {', '.join(unknown)}", path=source,
                              fix="use only name, description and steps")
        name = data.get("name") or (Path(source).stem if source else None)
        preset = cls(name=str(name) if name else "", steps=list(data.get("steps") or []),
                     description=str(data.get("description") or ""), source=source)
        for key in ("sample_rate", "clip_seconds"):
            if data.get(key) is not None and data[key] != getattr(preset, key):
                raise ConfigError(f"preset {preset.name!r} says {key}: {data[key]} but its steps give "
                                  f"{getattr(preset, key)}", path=source,
                                  fix=f"remove '{key}' (it is derived from the steps) or fix the steps")
        return preset

    def fingerprint(self) -> str:
        """SHA-256 of the steps and their parameters (what decides the clips, not the name)."""
        return hashlib.sha256(json.dumps(self.to_dict()["steps"], sort_keys=True).encode()).hexdigest()

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, width=100)

    def describe(self, note: str = "") -> str:
        """A few lines for the CLI: the name (and ``note``), then one line per step with its full parameters."""
        lines = [f"preset {self.name}" + (f" ({self.source})" if self.source else "") + (f" {note}" if note else "")]
        for i, (name, params) in enumerate(self.steps, 1):
            args = ", ".join(f"{k}={v}" for k, v in params.items())
            lines.append(f"  {i}. {name}({args})")
        return "\n".join(lines)


def builtin_preset_names() -> list[str]:
    return list(BUILTIN_PRESETS)


def load_preset(preset: "str | os.PathLike | Mapping | Preset | None" = None) -> Preset:
    """A :class:`Preset` from a built-in name, a YAML/JSON file, a dict (e.g. a ``steth.json``'s
    ``preset``) or a Preset; ``None`` gives the default (``excerpt-10s``)."""
    if preset is None:
        preset = DEFAULT_PRESET
    if isinstance(preset, Preset):
        return preset
    if isinstance(preset, Mapping):
        return Preset.from_dict(preset)
    if isinstance(preset, str) and preset in BUILTIN_PRESETS:
        return Preset.from_dict({"name": preset, **copy.deepcopy(BUILTIN_PRESETS[preset])})
    path = Path(preset)
    if not path.is_file():
        raise ConfigError(f"no preset named {str(preset)!r} and no such file",
                          fix=f"use a built-in preset ({', '.join(BUILTIN_PRESETS)}) or a YAML file path")
    return Preset.from_dict(read_yaml_or_json(path, what="preset"), source=str(path))


# =========================================================================== running
class Preprocessor:
    """Runs a preset's steps on one recording at a time.

    ``Preprocessor(preset).run(recording, recording_id)`` returns the clips (indexed from 0,
    ``start`` in seconds of the original recording) or raises ``RecordingRejected`` naming
    the file, the rule (``code``) and the fix.
    """

    def __init__(self, preset: "str | os.PathLike | Mapping | Preset | None" = None):
        self.preset = load_preset(preset)
        self.steps = self.preset.build()

    def run(self, recording: "Recording | str | os.PathLike | bytes", recording_id: str | None = None) -> list[Clip]:
        if not isinstance(recording, Recording):
            recording = decode(recording)
        rid = str(recording_id if recording_id is not None else recording.source)
        clips = [Clip(np.asarray(recording.samples, dtype=np.float32), recording.sample_rate, rid, 0.0, 0)]
        for name, step in self.steps:
            try:
                clips = step(clips)
            except RecordingRejected as exc:
                exc.path = recording.source if recording.source not in (None, "<array>") else rid
                raise
            except StethError:
                raise
            except Exception as exc:
                raise PluginError(f"preprocessing step {name!r} failed on {rid}: {type(exc).__name__}: {exc}",
                                  fix="fix or replace that step's plugin (run `steth plugins`)") from exc
            if not isinstance(clips, list) or not all(isinstance(c, Clip) for c in clips):
                raise PluginError(f"preprocessing step {name!r} returned {type(clips).__name__}, not a list of Clip",
                                  fix="a step must return list[Clip]")
            if not clips:
                raise RecordingRejected(f"step {name!r} left no clips", path=recording.source, code="no-clips",
                                        fix="check the preset's parameters")
        return [Clip(c.samples, c.sample_rate, c.recording_id, c.start, i) for i, c in enumerate(clips)]

    __call__ = run


def _recordings(corpus) -> Iterator[tuple[dict | None, Recording | None, StethError | None]]:
    """The corpus's recordings; one that fails to decode is yielded as an error and the rest go on."""
    n = len(corpus) if hasattr(corpus, "__len__") else None
    done = 0
    iterator = corpus.recordings()
    while True:
        try:
            row, recording = next(iterator)
        except StopIteration:
            return
        except AudioError as exc:
            yield None, None, exc
            done += 1
            if n is None or done >= n:
                return
            iterator = corpus.recordings(list(range(done, n)))
            continue
        done += 1
        yield row, recording, None


def preprocess_corpus(corpus, preset: "str | os.PathLike | Mapping | Preset | None" = None, progress: bool = True,
                      ) -> tuple[ClipSet, list[dict]]:
    """Run ``preset`` over every recording of ``corpus`` (a folder or a loaded ``Corpus``).

    Returns ``(clips, skipped)``: a :class:`ClipSet` with one label and patient per clip, and
    one dict per recording left out (``file``, ``recording_id``, ``code``, ``reason``, ``fix``).
    A rejected or undecodable recording is skipped; the rest go on.
    """
    from tqdm.auto import tqdm

    if isinstance(corpus, (str, os.PathLike)):
        from steth_hub.corpus import load_corpus

        corpus = load_corpus(corpus)
    preprocessor = Preprocessor(preset)
    preset = preprocessor.preset
    all_clips: list[Clip] = []
    labels: list[int] = []
    patients: list[str] = []
    skipped: list[dict] = []
    n_recordings = 0
    total = len(corpus) if hasattr(corpus, "__len__") else None
    bar = tqdm(_recordings(corpus), total=total, desc=f"preprocess ({preset.name})", unit="rec",
               disable=not progress)
    for row, recording, error in bar:
        n_recordings += 1
        if error is None:
            rid = str(row.get("recording_id") or recording.source)
            try:
                clips = preprocessor.run(recording, rid)
            except (RecordingRejected, AudioError) as exc:
                error = exc
            else:
                all_clips.extend(clips)
                labels.extend([int(row.get("label", -1))] * len(clips))
                patients.extend([str(row.get("patient_id", rid))] * len(clips))
                continue
        skipped.append({"file": error.path, "recording_id": (row or {}).get("recording_id"),
                        "patient_id": (row or {}).get("patient_id"), "code": error.code,
                        "reason": error.message, "fix": error.fix})
    bar.close()
    if not all_clips:
        codes = sorted({s["code"] for s in skipped})
        raise CorpusError(f"no recording survived preprocessing with preset {preset.name!r} "
                          f"({len(skipped)} skipped: {', '.join(codes) or 'none'})",
                          path=getattr(corpus, "path", None),
                          fix="choose a preset that fits these recordings (for 10 s excerpts: excerpt-10s)")
    lengths = {len(c.samples) for c in all_clips}
    if len(lengths) > 1 or len({c.sample_rate for c in all_clips}) > 1:
        raise ConfigError(f"preset {preset.name!r} gives clips of different lengths or rates",
                          path=preset.source, fix="add 'resample' and 'cut' steps so every clip has one shape")
    meta = {"preset": preset.to_dict(), "corpus": os.fspath(getattr(corpus, "path", "") or "") or None,
            "corpus_fingerprint": corpus_fingerprint(corpus), "n_recordings": n_recordings,
            "n_recordings_used": n_recordings - len(skipped), "skipped": skipped}
    return ClipSet.from_clips(all_clips, labels, patients, meta), skipped


def corpus_fingerprint(corpus) -> str | None:
    """SHA-256 over each recording's id, content hash, patient and label; None when unknown.

    Cached clips and features are reused only while this is unchanged, so a corpus imported
    again with other recordings or labels is never served stale clips.
    """
    try:
        columns = [corpus.column(name) for name in ("recording_id", "content_hash", "patient_id", "label")]
    except Exception:  # not a steth_hub Corpus: no caching
        return None
    digest = hashlib.sha256()
    for values in zip(*columns):
        digest.update(json.dumps([str(v) for v in values]).encode())
    return digest.hexdigest()


def clips_dir(corpus_path: str | os.PathLike, preset: Preset) -> Path:
    """Where ``steth preprocess`` keeps a corpus's clips: ``CORPUS/clips/<preset name>/``."""
    return Path(corpus_path) / "clips" / preset.name


def cached_clips(corpus, preset: "str | os.PathLike | Mapping | Preset | None" = None, *, progress: bool = True,
                 refresh: bool = False, out: str | os.PathLike | None = None,
                 ) -> tuple[ClipSet, list[dict], bool]:
    """The corpus's clips for ``preset``, computed once and kept in ``CORPUS/clips/<preset>/``.

    Returns ``(clips, skipped, reused)``. Saved clips are reused when their preset steps and
    the corpus fingerprint match; otherwise (or with ``refresh``) they are computed and saved
    atomically.
    """
    if isinstance(corpus, (str, os.PathLike)):
        from steth_hub.corpus import load_corpus

        corpus = load_corpus(corpus)
    preset = load_preset(preset)
    folder = Path(out) if out is not None else clips_dir(corpus.path, preset)
    fingerprint = corpus_fingerprint(corpus)
    if not refresh and fingerprint and folder.is_dir():
        try:
            saved = ClipSet.load(folder)
        except CorpusError as exc:
            log.warning("recomputing clips: %s", exc)
        else:
            same_steps = saved.meta.get("preset", {}).get("steps") == preset.to_dict()["steps"]
            if same_steps and saved.meta.get("corpus_fingerprint") == fingerprint:
                return saved, list(saved.meta.get("skipped") or []), True
    clips, skipped = preprocess_corpus(corpus, preset, progress=progress)
    clips.save(folder)
    return clips, skipped, False
