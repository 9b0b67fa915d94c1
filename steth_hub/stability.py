"""Whether a screening decision survives small, harmless changes of the recording.

A decision that changes when white noise 60 or 40 dB below the recording is added (inaudible)
is not a finding about the patient: it depends on the recording chain. Such a
decision is said to be *unstable*, and screening says so, so that it is never a silent answer.

:func:`perturb` is also what ``bench/bench_robustness.py`` applies (one definition of each
change); :data:`DEFAULT_CHECKS` are the noise rows of the project's robustness bar, and what a
model's ``steth.json`` (or its experiment config) asks for under ``"stability_checks"``. The noise is added to the recording as decoded, before
the preset resamples and band-limits it (as the bench adds it), so for a model that reads 0-2 kHz
a 44.1 kHz recording keeps less of it in band than a 4 kHz one. The noise of a check is
drawn from a generator seeded by the recording's own samples, so a recording always gets the same
answer, and a check never shares its noise with the bench's.
"""

from __future__ import annotations

import zlib
from typing import Iterable

import numpy as np

#: (kind, value): white noise ``value`` dB below the recording's RMS. A gain (``("gain", dB)``) is
#: a check only for models that do not normalise their clips: the embedded presets scale every
#: clip, so a level change moves nothing unless it clips, and a clipped copy is not screened.
DEFAULT_CHECKS: tuple[tuple[str, float], ...] = (("noise", 60.0), ("noise", 40.0))
#: the kinds a check may use (8-bit storage and resampling are bench conditions, not checks)
CHECK_KINDS = ("noise", "gain")


def perturb(samples: np.ndarray, rate: int, kind: str, value, rng: np.random.Generator) -> np.ndarray:
    """``samples`` under one change (float32, same rate and length).

    ``noise``: white noise ``value`` dB below the samples' RMS; ``bits``: requantised to ``value``
    bits; ``gain``: scaled by ``value`` dB, clipped to [-1, 1]; ``resample``: to ``value`` Hz and back.
    """
    x = np.asarray(samples, dtype=np.float64)
    if kind == "noise":
        rms = float(np.sqrt(np.mean(x ** 2)))
        out = x + rng.standard_normal(len(x)) * rms * 10.0 ** (-float(value) / 20.0)
    elif kind == "bits":
        step = 2.0 ** (1 - int(value))  # 1/128 for 8 bits
        out = np.clip(np.round(x / step) * step, -1.0, 1.0 - step)
    elif kind == "gain":
        out = np.clip(x * 10.0 ** (float(value) / 20.0), -1.0, 1.0)
    elif kind == "resample":
        from steth_hub.audio import resample

        down = resample(x.astype(np.float32), rate, int(value))
        out = resample(down, int(value), rate).astype(np.float64)
        out = out[: len(x)] if len(out) >= len(x) else np.pad(out, (0, len(x) - len(out)))
    else:
        raise ValueError(f"unknown change {kind!r}")
    return out.astype(np.float32)


def check_list(value, where: str | None = None) -> tuple[tuple[str, float], ...]:
    """``stability_checks`` as written in ``steth.json`` (a list of ``[kind, value]``), checked."""
    from steth_hub.errors import ModelError

    fix = ('write it as a list of [kind, value] pairs, e.g. [["noise", 60], ["noise", 40]] (noise: dB below '
           'the recording; ["gain", dB] only for a model that does not normalise its clips), or remove it')
    if not isinstance(value, (list, tuple)):
        raise ModelError(f"stability_checks must be a list, not {type(value).__name__}", path=where, fix=fix,
                         code="model-metadata")
    out = []
    for item in value:
        kind, amount = (item[0], item[1]) if isinstance(item, (list, tuple)) and len(item) == 2 else (None, None)
        try:
            number = isinstance(amount, (int, float)) and not isinstance(amount, bool) and bool(np.isfinite(amount))
        except (TypeError, OverflowError):  # an integer too large for a float
            number = False
        ok = number and ((kind == "noise" and 10.0 <= float(amount) <= 120.0)
                         or (kind == "gain" and 0.0 < abs(float(amount)) <= 24.0))
        if not ok:
            raise ModelError(f"stability check {item!r} is not a [kind, value] pair with kind in "
                             f"{list(CHECK_KINDS)} (noise 10-120 dB below the recording; gain non-zero, within "
                             "24 dB)", path=where, fix=fix, code="model-metadata")
        out.append((str(kind), float(amount)))
    return tuple(out)


def describe(kind: str, value: float) -> str:
    """A change in words: "white noise 40 dB below the recording", "its level raised by 6 dB"."""
    if kind == "noise":
        return f"white noise {value:g} dB below the recording"
    return f"its level {'raised' if value > 0 else 'lowered'} by {abs(value):g} dB"


def _generator(samples: np.ndarray, index: int) -> np.random.Generator:
    digest = zlib.crc32(np.ascontiguousarray(samples, dtype=np.float32).tobytes())
    return np.random.default_rng([digest, index, 0x57AB])


def check_stability(recording, probability: float, threshold: float, probabilities_of,
                    checks: Iterable[tuple[str, float]] = DEFAULT_CHECKS) -> dict:
    """Re-screen ``recording`` under each change of ``checks`` and compare the decisions.

    ``probabilities_of(recording)`` gives P(asthma) of a changed copy, or None when screening
    refuses that copy or the copy fails a quality check the original passed (a raised gain that
    clips, say); such a check is skipped, not counted.
    Returns ``{"stable": bool, "checked": [...], "changed": [...]}``, each entry
    ``{"change", "probability", "decision"}``; ``stable`` is False when any decision differs.
    """
    import dataclasses

    decision = bool(probability >= threshold)
    checked, changed = [], []
    samples = np.asarray(recording.samples, dtype=np.float32)
    for index, (kind, value) in enumerate(checks):
        changed_samples = perturb(samples, recording.sample_rate, kind, value, _generator(samples, index))
        copy = dataclasses.replace(recording, samples=changed_samples, warnings=[])
        p = probabilities_of(copy)
        if p is None:
            continue
        entry = {"change": describe(kind, value), "kind": kind, "value": float(value),
                 "probability": float(p), "decision": bool(p >= threshold)}
        checked.append(entry)
        if entry["decision"] != decision:
            changed.append(entry)
    return {"stable": not changed, "checked": checked, "changed": changed}


def unstable_warning(probability: float, threshold: float, report: dict) -> str | None:
    """The warning a user reads when the decision did not survive a harmless change (else None)."""
    if report["stable"]:
        return None
    worst = max(report["changed"], key=lambda e: abs(e["probability"] - probability))
    label = "asthma" if worst["decision"] else "not_asthma"
    return (f"unstable: {worst['change']} moves P(asthma) to {worst['probability']:.3f} ({label}); read this "
            f"result as indeterminate ({len(report['changed'])} of {len(report['checked'])} harmless changes "
            f"cross the threshold {threshold:.3f})")


def short_warning(warning: str) -> str:
    """An ``unstable`` warning in a few words, for a one-page report (other warnings unchanged)."""
    if not warning.startswith("unstable: ") or " moves P(asthma) to " not in warning:
        return warning
    change, rest = warning[len("unstable: "):].split(" moves P(asthma) to ", 1)
    return f"unstable: {change} moves P(asthma) to {rest.split(' ', 1)[0]}; indeterminate"
