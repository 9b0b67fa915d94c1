"""issue 13: a model card's diagnosis table lists KAUH's ``bron`` beside ``bronchiectasis``; it must say what it is."""

from __future__ import annotations

import json


def _card(tmp_path, diagnoses):
    from steth_hub.card import render_card

    folder = tmp_path / "m"
    folder.mkdir(exist_ok=True)
    meta = {"plugin": "mfcc-logreg", "threshold": 0.5, "sample_rate": 4000, "preset": {"name": "excerpt-10s"},
            "labels": ["not_asthma", "asthma"], "steth_hub_version": "0.1.0",
            "training": {"data": {"n_patients": 9, "n_recordings": 9, "diagnoses": diagnoses}}}
    (folder / "steth.json").write_text(json.dumps(meta))
    return render_card(folder)


def test_bron_beside_bronchiectasis_is_explained(tmp_path):
    text = _card(tmp_path, {"bron": 1, "bronchiectasis": 7, "normal": 1})
    assert "| bron | 1 |" in text and "| bronchiectasis | 7 |" in text
    assert "`bron` is KAUH's `BRON`" in text and "bronchitis or\nbronchiectasis" in text
    assert "`bron` is KAUH" not in _card(tmp_path, {"bronchiectasis": 7, "normal": 2})
