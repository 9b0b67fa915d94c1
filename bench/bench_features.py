"""Multi-window log-mel throughput (clips/s): steth_hub's batched torch extractor against librosa, in one run.

    .venv/bin/python bench/bench_features.py [--clips 64] [--rounds 3] [--device cpu] [--out result.json]

Both sides compute the same thing for each clip: three power mel spectrograms (Hann windows
of 25, 100 and 175 ms, hop 10 ms, n_fft 2800, 128 Slaney mel bands over 0-8 kHz, reflect
padding) turned into dB with ``top_db=80``. librosa does it the usual way, clip by clip
(``librosa.feature.melspectrogram`` + ``librosa.power_to_db``); steth_hub does it batched
with torch (:class:`steth_hub.features.MultiWindowLogMel`). The clips are real: the shared
recordings (``../shared/data/lung-sounds``, or ``$STETH_HUB_SHARED_DATA``) cut by the
default preset; without them, the shipped examples (with a note in the output).

The two are timed alternately, ``--rounds`` times each, in the same process; the ratio of
their best times is reported (the median of the per-round ratios too), with a numerical
check that they agree. Goal: at least 5x librosa on CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

from recordings import recording_files  # bench/recordings.py (scripts run from bench/)

def load_clips(limit: int) -> tuple[np.ndarray, str]:
    """Up to ``limit`` real 5 s clips at 16 kHz (default preset), and where they came from."""
    from steth_hub.errors import AudioError, RecordingRejected
    from steth_hub.preprocess import Preprocessor

    files, source = recording_files("*/*.wav")
    if source.startswith("NOTE"):
        source += " (fewer distinct clips)"
    pre = Preprocessor()
    clips: list[np.ndarray] = []
    rng = np.random.default_rng(0)
    for path in rng.permutation(files):  # a mix of KAUH and ICBHI, 4 and 44.1 kHz
        try:
            clips.extend(c.samples for c in pre.run(path))
        except (AudioError, RecordingRejected):
            continue
        if len(clips) >= limit:
            break
    while len(clips) < limit:  # few files (examples): repeat them
        clips.extend(clips[:limit - len(clips)])
    return np.stack(clips[:limit]).astype(np.float32), source


def librosa_features(clips: np.ndarray, extractor) -> np.ndarray:
    """The same three log-mel spectrograms per clip, with librosa, one clip at a time."""
    import librosa

    out = []
    for x in clips:
        per_window = []
        for win in extractor.win_lengths:
            mel = librosa.feature.melspectrogram(
                y=x, sr=extractor.sample_rate, n_fft=extractor.n_fft, hop_length=extractor.hop, win_length=win,
                window="hann", center=True, pad_mode="reflect", power=2.0, n_mels=extractor.n_mels,
                fmin=extractor.f_min, fmax=extractor.f_max)
            per_window.append(librosa.power_to_db(mel, ref=1.0, amin=extractor.amin, top_db=extractor.top_db))
        out.append(np.stack(per_window))
    return np.stack(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=64, help="number of 5 s clips [64]")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of each side [3]")
    parser.add_argument("--device", default="cpu", help="device of the torch side: cpu, cuda [cpu]")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads [torch's default]")
    parser.add_argument("--out", default=None, help="write the JSON result here too")
    args = parser.parse_args()

    import librosa
    import torch

    from steth_hub.features import MultiWindowLogMel

    if args.threads:
        torch.set_num_threads(args.threads)
    clips, source = load_clips(args.clips)
    extractor = MultiWindowLogMel(device=args.device)
    print(f"{len(clips)} clips of {clips.shape[1] / 16000:g} s from {source}")
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads, device {args.device}), "
          f"librosa {librosa.__version__}, {os.cpu_count()} CPUs")

    def ours() -> np.ndarray:
        out = extractor(clips, 16000)
        if out.device.type == "cuda":
            torch.cuda.synchronize()
        return out.cpu().numpy()

    def theirs() -> np.ndarray:
        return librosa_features(clips, extractor)

    ours(), theirs()  # warm up: imports, filterbanks, FFT plans, CUDA context
    times: dict[str, list[float]] = {"steth_hub": [], "librosa": []}
    results = {}
    for _ in range(args.rounds):
        for name, fn in (("steth_hub", ours), ("librosa", theirs)):
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)

    a, b = results["steth_hub"], results["librosa"]
    diff = np.abs(a - b)
    corr = float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
    best = {k: min(v) for k, v in times.items()}
    ratio = best["librosa"] / best["steth_hub"]
    per_round = [tl / to for to, tl in zip(times["steth_hub"], times["librosa"])]
    result = {
        "clips": len(clips), "clip_seconds": clips.shape[1] / 16000, "source": source, "device": args.device,
        "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(), "machine": platform.machine(),
        "python": sys.version.split()[0], "torch": torch.__version__, "librosa": librosa.__version__,
        "seconds": {k: [round(t, 4) for t in v] for k, v in times.items()},
        "clips_per_second": {k: round(len(clips) / t, 2) for k, t in best.items()},
        "ratio_best": round(ratio, 2), "ratio_median_of_rounds": round(statistics.median(per_round), 2),
        "max_abs_diff_db": round(float(diff.max()), 5), "mean_abs_diff_db": round(float(diff.mean()), 6),
        "correlation": round(corr, 8), "shape": list(a.shape), "goal": ">= 5x librosa on CPU",
    }
    print(f"{'':10s} {'best s':>8s} {'clips/s':>9s}")
    for name in ("steth_hub", "librosa"):
        print(f"{name:10s} {best[name]:8.3f} {len(clips) / best[name]:9.1f}")
    print(f"ratio (librosa time / steth_hub time): {ratio:.2f}x best, {statistics.median(per_round):.2f}x median "
          f"of rounds; same numbers: max |diff| {diff.max():.4f} dB, correlation {corr:.6f}")
    if diff.max() > 0.05:
        print("WARNING: the two outputs differ by more than 0.05 dB", file=sys.stderr)
    print(json.dumps(result))
    if args.out:
        from steth_hub.fileio import atomic_write_json

        atomic_write_json(args.out, result)


if __name__ == "__main__":
    main()
