"""Prompts for breath-sound generators: built from patient facts, and read back into them.

The paper prompts Stable Audio Open with sentences such as
``"Breath sample from F-8yo diagnosed with bronchial asthma"``. :func:`build_prompt` writes
that sentence from a diagnosis, a sex and an age; :func:`parse_prompt` reads such a sentence
back into :class:`Conditions`, which is what the shipped spectrogram diffusion model is
conditioned on (it has no text encoder). Text generators (``stable-audio``) get the sentence.

Every bad value is a :class:`~steth_hub.errors.ConfigError` naming the value and the fix.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from steth_hub.errors import ConfigError

#: the diagnoses a generator is conditioned on (the corpus's normalised diagnoses, grouped)
DIAGNOSES: tuple[str, ...] = ("asthma", "normal", "copd", "heart failure", "other")
#: words a user may type for each diagnosis (lower case)
_SYNONYMS = {
    "asthma": "asthma", "bronchial asthma": "asthma", "asthmatic": "asthma",
    "normal": "normal", "healthy": "normal", "n": "normal", "none": "normal",
    "copd": "copd", "chronic obstructive pulmonary disease": "copd",
    "heart failure": "heart failure", "hf": "heart failure", "chf": "heart failure",
    "other": "other", "bronchiectasis": "other", "bronchiolitis": "other", "bron": "other",
    "bronchitis": "other", "lung fibrosis": "other", "pneumonia": "other",
}
SEXES: tuple[str, ...] = ("F", "M")
#: age bands (lower bound inclusive, upper exclusive), in years
AGE_BANDS: tuple[tuple[str, float, float], ...] = (
    ("<18", 0.0, 18.0), ("18-39", 18.0, 40.0), ("40-59", 40.0, 60.0), ("60+", 60.0, 130.0))
MAX_AGE = 120.0


def diagnosis_group(diagnosis_normalised: str | None) -> str | None:
    """A corpus's normalised diagnosis (``asthma+lung fibrosis``, ``heart failure+copd``...) -> one of
    :data:`DIAGNOSES`: any diagnosis that includes asthma is asthma (the label's rule)."""
    if not diagnosis_normalised:
        return None
    d = str(diagnosis_normalised).strip().lower()
    if "asthma" in d:
        return "asthma"
    if d in ("normal", "copd"):
        return d
    if d.startswith("heart failure"):
        return "heart failure"
    return "other"


def normalise_diagnosis(value: str) -> str:
    """A diagnosis typed by a user -> one of :data:`DIAGNOSES`; anything else is an error naming them."""
    key = " ".join(str(value).strip().lower().replace("_", " ").split())
    if key in _SYNONYMS:
        return _SYNONYMS[key]
    raise ConfigError(f"unknown diagnosis {value!r}",
                      fix=f"use one of: {', '.join(DIAGNOSES)} (e.g. --diagnosis asthma)")


def normalise_sex(value: str | None) -> str | None:
    if value is None:
        return None
    key = str(value).strip().upper()
    key = {"FEMALE": "F", "MALE": "M", "W": "F"}.get(key, key)
    if key not in SEXES:
        raise ConfigError(f"unknown sex {value!r}", fix="use --sex F or --sex M (or leave it out)")
    return key


def check_age(value: float | None) -> float | None:
    if value is None:
        return None
    try:
        age = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"age {value!r} is not a number", fix="give the age in years, e.g. --age 8") from None
    if not 0 <= age <= MAX_AGE or age != age:
        raise ConfigError(f"age {value!r} is outside 0-{MAX_AGE:g} years", fix="give the age in years, e.g. --age 8")
    return age


def age_band(age: float | None) -> str | None:
    """The band of :data:`AGE_BANDS` an age falls in (None when unknown)."""
    if age is None:
        return None
    for name, low, high in AGE_BANDS:
        if low <= float(age) < high:
            return name
    return AGE_BANDS[-1][0]


@dataclass(frozen=True)
class Conditions:
    """What a synthetic clip is asked to be: a diagnosis and, optionally, the patient's sex and age."""

    diagnosis: str | None = None
    sex: str | None = None
    age: float | None = None

    @property
    def age_band(self) -> str | None:
        return age_band(self.age)

    @property
    def label(self) -> int | None:
        """1 asthma, 0 not asthma, None when no diagnosis was asked for."""
        return None if self.diagnosis is None else int(self.diagnosis == "asthma")

    def to_dict(self) -> dict:
        return {**asdict(self), "age_band": self.age_band}


def conditions(diagnosis: str | None = None, sex: str | None = None, age: float | None = None) -> Conditions:
    """Checked :class:`Conditions` from user values (errors name the bad value and the fix)."""
    return Conditions(None if diagnosis is None else normalise_diagnosis(diagnosis), normalise_sex(sex),
                      check_age(age))


_DIAGNOSIS_WORDS = {"asthma": "bronchial asthma", "normal": "no respiratory disease", "copd": "COPD",
                    "heart failure": "heart failure", "other": "another respiratory disease"}


def build_prompt(cond: Conditions) -> str:
    """The paper's prompt sentence: ``Breath sample from F-8yo diagnosed with bronchial asthma``."""
    who = []
    if cond.sex:
        who.append(cond.sex)
    if cond.age is not None:
        who.append(f"{cond.age:g}yo")
    text = "Breath sample"
    if who:
        text += " from " + "-".join(who)
    if cond.diagnosis:
        text += " diagnosed with " + _DIAGNOSIS_WORDS[cond.diagnosis]
    return text


_PATIENT = re.compile(r"\b(?P<sex>[FM])\s*-\s*(?P<age>\d+(?:\.\d+)?)\s*(?:yo|y|years?)\b", re.IGNORECASE)
_AGE = re.compile(r"\b(?P<age>\d+(?:\.\d+)?)\s*(?:yo|y/o|years?(?:\s+old)?)\b", re.IGNORECASE)
_SEX = re.compile(r"\b(?P<sex>female|male|woman|man|girl|boy)\b", re.IGNORECASE)
_SEX_WORDS = {"female": "F", "woman": "F", "girl": "F", "male": "M", "man": "M", "boy": "M"}


def parse_prompt(text: str) -> Conditions:
    """Read the patient facts out of a prompt sentence.

    Understands the paper's form (``"Breath sample from F-8yo diagnosed with bronchial asthma"``)
    and plain words (``"asthma, girl, 8 years"``, ``"healthy male 40 years old"``). A prompt that
    names no diagnosis is an error: a generator without a text encoder cannot guess one.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("the prompt is empty",
                          fix="give a prompt such as 'Breath sample from F-8yo diagnosed with bronchial asthma'")
    low = text.lower()
    diagnosis = None
    # longest synonyms first, whole words only ("n" alone would match anything)
    for word in sorted((w for w in _SYNONYMS if len(w) > 2), key=len, reverse=True):
        if re.search(rf"\b{re.escape(word)}\b", low):
            diagnosis = _SYNONYMS[word]
            break
    if diagnosis is None and re.search(r"\bno (?:respiratory|lung) disease\b", low):
        diagnosis = "normal"
    if diagnosis is None:
        raise ConfigError(f"the prompt {text!r} names no diagnosis this generator knows",
                          fix=f"name one of: {', '.join(DIAGNOSES)} (e.g. 'Breath sample from F-8yo diagnosed "
                              "with bronchial asthma'), or use --diagnosis")
    sex = age = None
    m = _PATIENT.search(text)
    if m:
        sex, age = m.group("sex").upper(), float(m.group("age"))
    else:
        m = _AGE.search(text)
        if m:
            age = float(m.group("age"))
        m = _SEX.search(text)
        if m:
            sex = _SEX_WORDS[m.group("sex").lower()]
    return Conditions(diagnosis, sex, check_age(age))
