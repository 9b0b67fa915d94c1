"""Start-up cost of the CLI, as a ratio to a bare Python interpreter measured in the same run.

    .venv/bin/python bench/bench_startup.py [--repeat 10]

`steth --help` and `steth plugins` load every plugin's registration module but no heavy
library; this shows how close to a bare interpreter they stay.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def best_of(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    py = sys.executable
    cases = {
        "python -c pass (baseline)": [py, "-c", "pass"],
        "import steth_hub": [py, "-c", "import steth_hub"],
        "steth --help": [py, "-m", "steth_hub.cli", "--help"],
        "steth plugins": [py, "-m", "steth_hub.cli", "plugins"],
        "import torch (for scale)": [py, "-c", "import torch"],
    }
    results = {name: best_of(cmd, args.repeat) for name, cmd in cases.items()}
    base = results["python -c pass (baseline)"]
    print(f"{'case':32s} {'median s':>9s} {'x baseline':>10s}")
    for name, seconds in results.items():
        print(f"{name:32s} {seconds:9.3f} {seconds / base:10.1f}")
    print(json.dumps({name: round(s, 4) for name, s in results.items()}))


if __name__ == "__main__":
    main()
