"""Record each embedded model's probabilities on the shipped examples into tests/data/<model>_expected.json.

Run after retraining an embedded model (configs/reproduce_efficientat_asthma.sh,
configs/reproduce_ast_asthma.sh):

    .venv/bin/python configs/record_expected.py            # every embedded model
    .venv/bin/python configs/record_expected.py steth/ast-asthma

tests/test_screen.py checks that each shipped model still gives these numbers.
"""

import hashlib
import json
import sys
from pathlib import Path

from steth_hub.fileio import atomic_write_json
from steth_hub.hub import EMBEDDED
from steth_hub.screening import screen_many

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "steth_hub" / "examples"


def expected_file(name: str) -> Path:
    """tests/data/<folder name with - as _>_expected.json, e.g. ast_asthma_expected.json."""
    return REPO / "tests" / "data" / f"{EMBEDDED[name].name.replace('-', '_')}_expected.json"


def record(name: str) -> dict:
    results, failures = screen_many(sorted(EXAMPLES.glob("*/*.wav")), model=name, progress=False)
    assert not failures, failures
    out = {
        "model": name,
        "model_sha256": hashlib.sha256((EMBEDDED[name] / "model.safetensors").read_bytes()).hexdigest(),
        "threshold": results[0].threshold,
        "probabilities": {str(Path(r.source).relative_to(EXAMPLES)): round(r.probability, 6) for r in results},
        "decisions": {str(Path(r.source).relative_to(EXAMPLES)): r.label for r in results},
    }
    atomic_write_json(expected_file(name), out)
    return out


if __name__ == "__main__":
    for model in sys.argv[1:] or sorted(EMBEDDED):
        print(json.dumps(record(model), indent=2))
