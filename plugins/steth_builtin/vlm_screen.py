"""Screening with a VLM: the patient facts each recording's prompt gets, and the model's own words.

A VLM classifier reads the patient's sex, age and the recording site in its prompt. ``steth screen``
calls :func:`register_facts` before screening so each recording's clips are prompted with that
patient's facts (sex and age from ``--sex/--age`` or a manifest, the site from ``--manifest`` or
the file name's site field as the corpus importers read it; never the file name's diagnosis or
sound type). A fact that is not known is left out of the prompt, and the lines returned say which.
:func:`explain_text` gives the free answer the model writes for a recording, parsed to a label.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np


def uses_facts(classifier) -> bool:
    return callable(getattr(classifier, "register_recording", None))


def register_facts(classifier, path, *, sex: Any = None, age: Any = None, site: str | None = None) -> dict:
    """Register ``path``'s clips with these facts; returns ``{"facts": {...}, "omitted": [...], "prompt"}``."""
    from steth_builtin.vlm_prompt import make_facts
    from steth_hub.patient import name_facts

    if site is None:
        site = name_facts(os.fspath(path)).get("site")
    facts = make_facts(sex=sex, age=age, site=site)
    prompts = classifier.register_recording(path, facts)
    _, omitted = classifier.prompt_for(facts)
    return {"facts": facts.to_dict(), "omitted": omitted, "prompt": prompts[0] if prompts else None}


def describe(entry: dict) -> str:
    """One line: the facts the prompt carried and the ones left out."""
    given = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                      for k, v in entry["facts"].items() if v is not None)
    left = ", ".join(entry["omitted"])
    return f"prompt facts: {given or 'none'}" + (f"; left out (not known): {left}" if left else "")


def explain_text(classifier, path, max_new_tokens: int | None = None) -> dict:
    """The model's free answer for the recording's first clip, parsed: ``{"text", "label", "prompt", "omitted"}``."""
    from steth_hub.screening import ScreeningPipeline, to_recording

    recording = to_recording(path, None)
    clips, _ = ScreeningPipeline(classifier).clips(recording, recording.source)
    waveforms = np.stack([c.samples for c in clips]).astype(np.float32)
    answers = classifier.generate_text(waveforms, max_new_tokens=max_new_tokens)
    labels = [a["label"] for a in answers]
    first = dict(answers[0])
    first["labels_per_clip"] = labels
    return first
