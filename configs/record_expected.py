"""Record the embedded model's probabilities on the shipped examples into tests/data/ast_asthma_expected.json.

Run after retraining steth_hub/models/ast-asthma (configs/reproduce_ast_asthma.sh):

    .venv/bin/python configs/record_expected.py

tests/test_screen.py checks that the shipped model still gives these numbers.
"""

import hashlib
import json
from pathlib import Path

from steth_hub.fileio import atomic_write_json
from steth_hub.screening import screen_many

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "steth_hub" / "models" / "ast-asthma"
EXAMPLES = REPO / "steth_hub" / "examples"

results, failures = screen_many(sorted(EXAMPLES.glob("*/*.wav")), progress=False)
assert not failures, failures
record = {
    "model_sha256": hashlib.sha256((MODEL / "model.safetensors").read_bytes()).hexdigest(),
    "threshold": results[0].threshold,
    "probabilities": {str(Path(r.source).relative_to(EXAMPLES)): round(r.probability, 6) for r in results},
    "decisions": {str(Path(r.source).relative_to(EXAMPLES)): r.label for r in results},
}
atomic_write_json(REPO / "tests" / "data" / "ast_asthma_expected.json", record)
print(json.dumps(record, indent=2))
