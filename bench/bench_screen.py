"""Screening speed on CPU with the default model: latency for one 10 s recording, throughput over many.

    .venv/bin/python bench/bench_screen.py [--model steth/efficientat-asthma] [--files 40] [--repeat 5] [--threads N] [--out result.json]

Baseline, in the same process: decoding and preprocessing the same recordings (the work every
screening does before the model runs). Reported: the median latency of ``screen()`` on one real
10 s recording (model already loaded), the recordings per second of ``screen_many()`` over real
recordings (the shared data, or the shipped examples with a note), and each as a ratio to the
baseline, so a reader sees what the model adds on this machine; and the latency of the same
screening without the model's stability checks (``screen(..., stability=False)``), as a ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from recordings import recording_files  # bench/recordings.py (scripts run from bench/)

def recordings(limit: int) -> tuple[list[Path], str]:
    files, source = recording_files("*/*.wav")
    import numpy as np

    picked = list(np.random.default_rng(0).permutation(files))[:limit]
    return [Path(p) for p in picked], source


def _duration(path) -> float:
    import soundfile

    return soundfile.info(str(path)).duration


def _timed(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder or name (default: the embedded steth/efficientat-asthma)")
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    import torch

    from steth_hub.audio import decode
    from steth_hub.errors import StethError
    from steth_hub.screening import ScreeningPipeline, load_model, screen, screen_many

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model)
    pipeline = ScreeningPipeline(model)
    files, source = recordings(args.files)
    one = next(p for p in files if "kauh" in str(p))  # a 10 s KAUH recording

    def baseline(path):
        try:
            rec = decode(path)
            return pipeline.clips(rec, str(path))
        except StethError:
            return None

    screen(one, model=model)  # warm-up: first call builds the front end
    base_one = _timed(lambda: baseline(one), args.repeat)
    screen_one = _timed(lambda: screen(one, model=model), args.repeat)
    plain_one = _timed(lambda: screen(one, model=model, stability=False), args.repeat)
    base_many = _timed(lambda: [baseline(p) for p in files], 1)[0]
    many = _timed(lambda: screen_many(files, model=model, progress=False), 1)[0]
    results, failures = screen_many(files, model=model, progress=False)
    report = {
        "source": source, "model": args.model or "steth/efficientat-asthma", "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "latency_one_10s_recording_s": statistics.median(screen_one),
        "baseline_decode_preprocess_s": statistics.median(base_one),
        "latency_ratio_to_baseline": statistics.median(screen_one) / statistics.median(base_one),
        # seconds of computing per second of audio (the recording lasts 10 s); below 1 is faster than real time
        "real_time_factor": statistics.median(screen_one) / _duration(one),
        # the model's stability checks (steth_hub/stability.py) against the same screening without them
        "stability_checks": len(pipeline.stability_checks),
        "latency_without_stability_checks_s": statistics.median(plain_one),
        "stability_cost_ratio": statistics.median(screen_one) / statistics.median(plain_one),
        "runtime": type(model).__name__,
        "files": len(files), "screened": len(results), "failed": len(failures),
        "throughput_recordings_per_s": len(files) / many,
        "baseline_recordings_per_s": len(files) / base_many,
        "throughput_ratio_baseline_to_screen": many / base_many,
    }
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
