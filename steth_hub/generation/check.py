""""AI checks AI": a diagnostic classifier scores every synthetic clip.

The paper reports that about 95.2 % of its synthetic clips were classified as prompted. Here
:func:`score_recordings` gives each synthetic recording the classifier's P(asthma), computed the
way the classifier reads real clips: its own preprocessing preset, less the steps meant for a
stethoscope recording's edges (``min-duration``, ``clipping``, ``trim``: a synthetic clip has no
start-up transient and is exactly as long as asked), so band limit, resampling, cutting into the
classifier's clip length and peak normalisation are the same as for real clips. A recording
shorter than one clip is repeated to fill it. A recording's probability is the mean of its clips'.

:func:`check_clips` turns the probabilities into the verdict: a clip is "classified as prompted"
when an asthma prompt got P(asthma) >= the threshold, or a not-asthma prompt got P(asthma) below it.
The threshold is the classifier's own decision threshold unless ``keep_threshold`` is given. Clips
classified as prompted are kept; the others are rejected (written aside, never deleted silently).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: preprocessing steps that only make sense at the edges of a real recording
SKIPPED_STEPS = ("min-duration", "clipping", "trim")
DEFAULT_CHECK_MODEL = "steth/efficientat-asthma"


def synthetic_preset(preset):
    """The classifier's preset without :data:`SKIPPED_STEPS`."""
    from steth_hub.preprocess import Preset, load_preset

    p = load_preset(preset)
    steps = [{name: dict(params)} for name, params in p.steps if name not in SKIPPED_STEPS]
    return Preset.from_dict({"name": f"{p.name}-synthetic", "steps": steps,
                             "description": f"{p.name} without {', '.join(SKIPPED_STEPS)} (synthetic clips)"})


def score_recordings(recordings, classifier) -> np.ndarray:
    """P(asthma) per recording (float64 ``[N]``), each the mean over its clips."""
    from steth_hub.audio import Recording
    from steth_hub.preprocess import Preprocessor

    preset = synthetic_preset(getattr(classifier, "preset", None) or "excerpt-10s")
    pre = Preprocessor(preset)
    seconds = preset.clip_seconds
    out = []
    for i, rec in enumerate(recordings):
        samples = np.asarray(rec.samples, dtype=np.float32)
        if seconds:
            need = int(np.ceil(seconds * rec.sample_rate))
            if len(samples) < need:
                samples = np.tile(samples, int(np.ceil(need / max(len(samples), 1))))[:need]
        clips = pre.run(Recording(samples=samples, sample_rate=rec.sample_rate, source=f"<synthetic {i}>"),
                        f"synthetic-{i}")
        waves = np.stack([c.samples for c in clips])
        out.append(float(np.mean(classifier.predict_proba(waves))))
    return np.asarray(out, dtype=np.float64)


@dataclass
class CheckResult:
    probabilities: np.ndarray
    as_prompted: np.ndarray  # bool per clip
    threshold: float
    prompted_label: int

    @property
    def share(self) -> float:
        return float(np.mean(self.as_prompted)) if len(self.as_prompted) else float("nan")

    def summary(self, model_name: str) -> str:
        n, k = len(self.as_prompted), int(self.as_prompted.sum())
        what = "asthma" if self.prompted_label == 1 else "not asthma"
        return (f"check: {k}/{n} clips ({100 * self.share:.1f}%) classified as prompted ({what}) by {model_name} "
                f"at threshold {self.threshold:.3f}; kept {k}, rejected {n - k}")


def check_clips(recordings, classifier, prompted_label: int, keep_threshold: float | None = None) -> CheckResult:
    from steth_hub.errors import ConfigError

    thr = float(classifier.threshold if keep_threshold is None else keep_threshold)
    if not 0.0 <= thr <= 1.0:
        raise ConfigError(f"--keep-threshold {keep_threshold!r} is outside 0-1",
                          fix="give a probability threshold between 0 and 1, or leave it out (the model's own)")
    prob = score_recordings(recordings, classifier)
    as_prompted = prob >= thr if int(prompted_label) == 1 else prob < thr
    return CheckResult(prob, as_prompted, thr, int(prompted_label))
