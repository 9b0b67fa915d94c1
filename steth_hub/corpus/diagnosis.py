"""Where a diagnosis as written in a corpus becomes a canonical name and the asthma label.

Corpora spell diagnoses their own way: KAUH writes ``N``, ``Asthma``, ``asthma``,
``Heart Failure + COPD``, ``Asthma and lung fibrosis``; ICBHI writes ``Healthy``, ``COPD``,
``URTI``. :func:`normalise_diagnosis` maps them to one lower-case vocabulary so that counts,
stratification and the label agree across corpora:

* the text is trimmed, lower-cased and its inner spaces collapsed;
* combined diagnoses are split on ``+``, ``&``, ``,``, ``;``, ``/`` and the word ``and``,
  each part is mapped through :data:`SYNONYMS`, and the parts are joined with ``+`` in the
  order given (``Heart Failure + COPD`` -> ``heart failure+copd``);
* a part not in the table is kept as written (lower-cased), so nothing is silently renamed.

KAUH's ``BRON`` stays ``bron``: the dataset does not say whether it means bronchitis or
bronchiectasis, and guessing would put a recording under the wrong disease.

:func:`asthma_label` gives 1 when ``asthma`` is one of the parts (asthma alone or with
another disease), else 0.
"""

from __future__ import annotations

import re

#: part as written (lower-case, single spaces) -> canonical name
SYNONYMS: dict[str, str] = {
    "n": "normal",
    "normal": "normal",
    "healthy": "normal",
    "asthma": "asthma",
    "asthmatic": "asthma",
    "bronchial asthma": "asthma",
    "copd": "copd",
    "chronic obstructive pulmonary disease": "copd",
    "heart failure": "heart failure",
    "hf": "heart failure",
    "chf": "heart failure",
    "congestive heart failure": "heart failure",
    "lung fibrosis": "lung fibrosis",
    "pulmonary fibrosis": "lung fibrosis",
    "bron": "bron",
    "bronchiectasis": "bronchiectasis",
    "bronchiolitis": "bronchiolitis",
    "bronchitis": "bronchitis",
    "pneumonia": "pneumonia",
    "pleural effusion": "pleural effusion",
    "plueral effusion": "pleural effusion",  # KAUH's spelling
    "urti": "urti",
    "lrti": "lrti",
}

ASTHMA = "asthma"

_SPLIT = re.compile(r"\s*(?:[+&,;/]|\band\b)\s*")


def diagnosis_parts(diagnosis: str) -> list[str]:
    """The canonical parts of a diagnosis, in the order written, without repeats."""
    text = " ".join(str(diagnosis).split()).lower()
    parts: list[str] = []
    for raw in _SPLIT.split(text):
        raw = raw.strip()
        if not raw:
            continue
        name = SYNONYMS.get(raw, raw)
        if name not in parts:
            parts.append(name)
    return parts


def normalise_diagnosis(diagnosis: str) -> str:
    """Canonical lower-case name of a diagnosis (``"Heart Failure + COPD"`` -> ``"heart failure+copd"``).

    Raises ``ValueError`` for an empty diagnosis: a recording without one cannot be labelled.
    """
    parts = diagnosis_parts(diagnosis)
    if not parts:
        raise ValueError(f"empty diagnosis {diagnosis!r}")
    return "+".join(parts)


def asthma_label(diagnosis_normalised: str) -> int:
    """1 when asthma is among the diagnoses (alone or combined), else 0."""
    return int(ASTHMA in diagnosis_normalised.split("+"))
