"""Built-in preprocessing steps: registration only (importing this module imports nothing heavy).

Each step's factory takes keyword parameters and returns ``step(clips) -> clips``; see
``steth_hub/preprocess.py`` and ``docs/preprocessing.md`` for what each does and the presets
that chain them.
"""

from steth_hub import PreprocessorSpec, hookimpl

_STEPS = (
    ("min-duration", "Reject recordings shorter than `seconds` (paper: 14 s)", "steth_hub.preprocess:MinDuration"),
    ("clipping", "Reject clipped recordings (method: plateau | full-scale | paper-p95)",
     "steth_hub.clipping:ClippingCheck"),
    ("trim", "Cut `seconds` off each end (paper: 2 s)", "steth_hub.preprocess:Trim"),
    ("noise-floor", "Add the same white noise `snr_db` below each recording's RMS (masks recording-chain floors)",
     "steth_hub.preprocess:NoiseFloor"),
    ("bandlimit", "Low-pass to `max_hz` so all recordings share one band (removes the sample-rate shortcut)",
     "steth_hub.preprocess:BandLimit"),
    ("resample", "Resample to `sample_rate` with soxr", "steth_hub.preprocess:Resample"),
    ("cut", "Whole clips of `seconds` with `overlap` % overlap, span centred", "steth_hub.preprocess:Cut"),
    ("normalise", "Normalise each clip (method: peak | rms)", "steth_hub.preprocess:Normalise"),
)


@hookimpl
def register_preprocessors(register):
    """Register the built-in preprocessing steps."""
    for name, summary, factory in _STEPS:
        register(PreprocessorSpec(name=name, summary=summary, factory=factory, requires=("soxr",)))
