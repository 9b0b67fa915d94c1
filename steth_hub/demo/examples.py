"""The example recordings shipped with steth-hub, offered on the page with their known diagnosis."""

from __future__ import annotations

import logging

from steth_hub.demo.screener import PatientFacts
from steth_hub.demo.settings import EXAMPLES_DIR
from steth_hub.errors import StethError

log = logging.getLogger(__name__)


def example_rows() -> list[tuple[str, str, str, float | None, str]]:
    """``(label, path, sex, age, site)`` for each example recording shipped with the package.

    The label names the source and the known diagnosis so a visitor can compare; sex, age and
    site come from the file name (KAUH) and fill the patient facts.
    """
    from steth_hub.corpus.diagnosis import normalise_diagnosis
    from steth_hub.corpus.icbhi import parse_icbhi_name, read_diagnoses
    from steth_hub.corpus.kauh import parse_kauh_name

    rows = []
    for path in sorted(EXAMPLES_DIR.glob("*/*.wav")):
        sex, age, site, diagnosis = "", None, "", None
        try:  # the corpus importers' own name parsers
            if path.parent.name == "kauh":
                meta = parse_kauh_name(path.name)
                sex, age, site = meta["sex"] or "", meta["age"], meta["site"] or ""
                diagnosis = normalise_diagnosis(meta["diagnosis"])
            elif path.parent.name == "icbhi":
                meta = parse_icbhi_name(path.name)
                site = meta["site"] or ""
                known = read_diagnoses(path.parent / "patient_diagnosis.csv").get(meta["patient"])
                diagnosis = normalise_diagnosis(known) if known else None
        except (ValueError, StethError) as exc:  # an odd name still gives an example, without facts
            log.debug("example %s: %s", path.name, exc)
        facts = PatientFacts(sex=sex or None, age=age, site=site or None).describe()
        label = f"{path.parent.name.upper()}: {diagnosis or 'diagnosis unknown'} ({facts})"
        rows.append((label, str(path), sex, age, site))
    return rows
