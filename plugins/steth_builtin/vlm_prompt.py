"""What a vision-language classifier is asked: the paper's prompt JSON, built from patient facts only.

The paper's VLM read the three-window spectrogram image and this JSON::

    {"task": "Write a diagnosis for this patient by analyzing the respiratory sound spectrogram.",
     "patient_sex": "M", "patient_age": 9, "record_point": "posterior thoracic rib",
     "spectrogram_bins_width": "[0.025, 0.1, 0.175]"}

:func:`build_prompt` writes it from :class:`PromptFacts` (sex, age, recording site) and the
spectrogram's window widths. Which fields go in is a setting (``prompt_fields``). A fact that is
not known is left out of the JSON and listed in ``omitted``, never guessed.

The only patient facts a prompt can carry are sex, age and the recording site: :func:`facts_from_row`
reads exactly those three columns of a corpus row, by name. The clinician's sound-type annotation
(KAUH ``E W``, ``Crep``...), the diagnosis and the label are never read, so they can never reach a
prompt (tests/test_vlm.py checks this on every shared KAUH recording).

:func:`parse_answer` turns generated text into a label, robustly ("Not asthma.", "no signs of
asthma", "Diagnosis: asthma"...). Importing this module imports nothing heavy.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from steth_hub.errors import ConfigError

#: the paper's task sentence
DEFAULT_TASK = "Write a diagnosis for this patient by analyzing the respiratory sound spectrogram."
#: every field a prompt may hold, in the paper's order
PROMPT_FIELDS = ("patient_sex", "patient_age", "record_point", "spectrogram_bins_width")
#: the patient facts (all but the spectrogram's own description)
FACT_FIELDS = ("patient_sex", "patient_age", "record_point")
#: the corpus columns a prompt may read; nothing else of a row is ever looked at
ROW_COLUMNS = ("sex", "age", "site")
#: the answers scored by default, label -> text
DEFAULT_ANSWERS = {"not_asthma": "not asthma", "asthma": "asthma"}

_KAUH_SIDE = {"L": "left", "R": "right"}
_KAUH_FACE = {"P": "posterior", "A": "anterior"}
_KAUH_LEVEL = {"U": "upper", "M": "middle", "L": "lower"}
_ICBHI = {"tc": "trachea", "al": "anterior left", "ar": "anterior right", "pl": "posterior left",
          "pr": "posterior right", "ll": "lateral left", "lr": "lateral right"}


@dataclass(frozen=True)
class PromptFacts:
    """What may be said about the patient in a prompt: sex, age, recording site (each optional)."""

    sex: str | None = None
    age: float | None = None
    site: str | None = None

    def to_dict(self) -> dict:
        return {"sex": self.sex, "age": self.age, "site": self.site}


def facts_from_row(row: Mapping[str, Any]) -> PromptFacts:
    """The prompt facts of a corpus row (``sex``, ``age``, ``site`` columns only, by name)."""
    sex = row.get("sex")
    age = row.get("age")
    site = row.get("site")
    return make_facts(sex=sex, age=age, site=site)


def make_facts(sex: Any = None, age: Any = None, site: Any = None) -> PromptFacts:
    """Normalised facts (``F``/``M``, years, site text); empty or NaN values become unknown."""
    from steth_hub.patient import normalise_age, normalise_sex

    if isinstance(age, float) and math.isnan(age):
        age = None
    site_text = None if site is None or str(site).strip() == "" else str(site).strip()
    return PromptFacts(normalise_sex(sex), normalise_age(age), site_text)


def describe_site(site: str | None) -> str | None:
    """A recording-site code in words: KAUH ``P L L`` -> "posterior left lower", ICBHI ``Ar`` -> "anterior right".

    Other text is returned as it is (a manifest may already say "posterior thoracic rib")."""
    if site is None:
        return None
    text = str(site).strip()
    parts = text.replace(",", " ").split()
    if len(parts) == 3 and parts[0].upper() in _KAUH_FACE and parts[1].upper() in _KAUH_SIDE \
            and parts[2].upper() in _KAUH_LEVEL:
        return f"{_KAUH_FACE[parts[0].upper()]} {_KAUH_SIDE[parts[1].upper()]} {_KAUH_LEVEL[parts[2].upper()]}"
    if text.lower() in _ICBHI:
        return _ICBHI[text.lower()]
    return text


def check_fields(fields: Any, *, where: str = "model.prompt_fields") -> tuple[str, ...]:
    """The configured prompt fields, checked: a list drawn from :data:`PROMPT_FIELDS`."""
    if fields is None:
        return PROMPT_FIELDS
    if isinstance(fields, str) or not isinstance(fields, Sequence):
        raise ConfigError(f"{where} must be a list, got {fields!r}",
                          fix=f"e.g. {where}: [{', '.join(PROMPT_FIELDS)}]")
    bad = [f for f in fields if f not in PROMPT_FIELDS]
    if bad:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(map(str, bad))}",
                          fix=f"choose from {', '.join(PROMPT_FIELDS)} (annotations and diagnoses are never "
                              "prompt fields)")
    return tuple(dict.fromkeys(fields))


def build_prompt(facts: PromptFacts | None, *, fields: Sequence[str] = PROMPT_FIELDS, task: str = DEFAULT_TASK,
                 windows_ms: Sequence[float] = (25, 100, 175)) -> tuple[str, list[str]]:
    """The prompt JSON and the fields left out because the fact is unknown.

    Only ``facts`` (sex, age, site) and the window widths are written; the key order is the paper's.
    """
    facts = facts or PromptFacts()
    fields = check_fields(fields)
    prompt: dict[str, Any] = {"task": str(task)}
    omitted: list[str] = []
    for field in fields:
        if field == "patient_sex":
            value: Any = facts.sex
        elif field == "patient_age":
            value = None if facts.age is None else (int(facts.age) if float(facts.age).is_integer()
                                                    else round(float(facts.age), 1))
        elif field == "record_point":
            value = describe_site(facts.site)
        else:
            value = "[" + ", ".join(f"{float(w) / 1000:g}" for w in windows_ms) + "]"
        if value is None:
            omitted.append(field)
        else:
            prompt[field] = value
    return json.dumps(prompt, ensure_ascii=False), omitted


def check_answers(answers: Any, *, where: str = "model.answers") -> dict:
    """``{"not_asthma": text, "asthma": text}``: two different, non-empty answer strings."""
    if answers is None:
        return dict(DEFAULT_ANSWERS)
    if not isinstance(answers, Mapping) or set(answers) != set(DEFAULT_ANSWERS) \
            or not all(isinstance(v, str) and v.strip() for v in answers.values()) \
            or answers["asthma"].strip().lower() == answers["not_asthma"].strip().lower():
        raise ConfigError(f"{where} must map not_asthma and asthma to two different texts, got {answers!r}",
                          fix=f"e.g. {where}: {{not_asthma: not asthma, asthma: asthma}}")
    return {"not_asthma": answers["not_asthma"].strip(), "asthma": answers["asthma"].strip()}


_NEGATIONS = (r"\bnot\b", r"\bno\b", r"\bnon[- ]?", r"\bwithout\b", r"\bneither\b", r"\babsence of\b",
              r"\bunlikely\b", r"\bexcluded?\b", r"\bruled? out\b", r"\bnegative for\b", r"\bfree of\b")


def parse_answer(text: str, answers: Mapping[str, str] | None = None) -> str | None:
    """``"asthma"``, ``"not_asthma"`` or None (no decision found) from a generated answer.

    The configured answer texts are matched first (the longer one first, so "not asthma" wins over
    "asthma"); then "asthma" with a negation within the few words before it is not asthma, "asthma"
    alone is asthma; "normal"/"healthy" without "asthma" is not asthma.
    """
    answers = dict(answers or DEFAULT_ANSWERS)
    clean = " ".join(re.sub(r"[^a-z0-9 ]+", " ", str(text or "").lower()).split())
    if not clean:
        return None
    for label, answer in sorted(answers.items(), key=lambda kv: -len(kv[1])):
        a = " ".join(re.sub(r"[^a-z0-9 ]+", " ", answer.lower()).split())
        if a and re.search(rf"(^|\s){re.escape(a)}($|\s)", clean):
            if label == "asthma" and _negated(clean, clean.find(a)):
                return "not_asthma"
            return label
    position = clean.find("asthma")
    if position >= 0:
        return "not_asthma" if _negated(clean, position) else "asthma"
    if re.search(r"\b(normal|healthy|no disease|no abnormality)\b", clean):
        return "not_asthma"
    return None


def _negated(text: str, position: int) -> bool:
    before = " ".join(text[:position].split()[-4:]) + " "
    return any(re.search(p, before) for p in _NEGATIONS)
