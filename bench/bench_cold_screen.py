"""The light screening runtime against the torch path: cold start, warm throughput, install size.

    .venv/bin/python bench/bench_cold_screen.py [--model M] [--repeat 5] [--files 0] [--threads 1] [--install screen,train] [--demo] [--out r.json]

Measured in one run, so the ratios compare like with like on this machine:

* **cold** ``steth screen one.wav`` (a fresh process: interpreter start, imports, model load,
  decode, preprocess, features, network): wall time (median of ``--repeat``, runs interleaved)
  and peak memory (max RSS of the process, from ``wait4``), for the light path (ONNX Runtime
  + numpy front end, the default when the model has an export), the torch path
  (``STETH_RUNTIME=torch``) and a bare ``python -c pass``;
* **warm** throughput: recordings per second of ``screen_many`` over real recordings (the
  shared data, or the shipped examples with a note), both paths in this process with the
  same thread count (``--threads``; ONNX Runtime and torch), each model loaded once beforehand,
  ``--rounds`` passes per path alternated (the best pass counts);
* **demo** (``--demo``): the demo's screening path cold, a fresh process that builds the page
  (``steth_hub.demo.build_app``, what the Space runs) and screens one recording through it, as a
  visitor's first request: light (no map), the torch runtime (``STETH_RUNTIME=torch``, no map),
  light with the map asked for (what every request did before the map became optional), against
  building the page alone; then warm, in this process, one request at a time on a page already
  serving (``--rounds`` x 3 requests per case, alternated, median): screening alone vs with the map;
* **install** (``--install screen,train``): wall time and size of a fresh venv with
  ``pip install '.[screen]'`` and ``pip install '.[train]'`` (from the package index or pip's
  cache: the time depends on the network and the cache, the size does not).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from recordings import recording_files  # bench/recordings.py (scripts run from bench/)

REPO = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], env: dict) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in MB, exit status) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err[-2000:]}")
    return wall, usage.ru_maxrss / 1024.0, proc.returncode  # ru_maxrss is in KB on Linux


def cold(one_file: Path, repeat: int, threads: int | None, model: str | None) -> dict:
    python = sys.executable
    steth = str(Path(python).with_name("steth"))
    base = {k: v for k, v in os.environ.items() if k != "STETH_RUNTIME"}
    if threads:
        base["OMP_NUM_THREADS"] = str(threads)
    screen = [steth, "screen", "--quiet", *(["--model", model] if model else []), str(one_file)]
    cases = {
        "python -c pass": ([python, "-c", "pass"], base),
        "steth screen, light (ONNX)": (screen, dict(base, STETH_RUNTIME="onnx")),
        "steth screen, torch": (screen, dict(base, STETH_RUNTIME="torch")),
    }
    for cmd, env in cases.values():  # warm the file cache once: every timed run then reads from memory
        _run(cmd, env)
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    for _ in range(repeat):  # interleaved, so a busy moment of the machine hits every case alike
        for name, (cmd, env) in cases.items():
            wall, rss, _ = _run(cmd, env)
            runs[name].append((wall, rss))
    out = {}
    for name, values in runs.items():
        walls = [w for w, _ in values]
        out[name] = {"wall_s_median": round(statistics.median(walls), 3), "wall_s_min": round(min(walls), 3),
                     "peak_rss_mb_max": round(max(r for _, r in values), 1)}
    light, heavy, bare = (out["steth screen, light (ONNX)"], out["steth screen, torch"], out["python -c pass"])
    out["ratios"] = {"torch / light wall": round(heavy["wall_s_median"] / light["wall_s_median"], 2),
                     "light / bare python wall": round(light["wall_s_median"] / bare["wall_s_median"], 2),
                     "torch / light peak memory": round(heavy["peak_rss_mb_max"] / light["peak_rss_mb_max"], 2)}
    return out


DEMO_CODE = ("import sys\nfrom steth_hub import demo\napp = demo.build_app()\n"
             "if sys.argv[1] != '-':\n"
             "    out = app.steth_screener(sys.argv[1], None, explain=sys.argv[2] == 'map')\n"
             "    assert 'error' not in out[4], out[4]\n")


def demo_cold(one_file: Path, repeat: int, threads: int | None) -> dict:
    """Cold start of the demo's screening path (``--demo``): build the page, screen one recording."""
    python = sys.executable
    base = {k: v for k, v in os.environ.items() if k != "STETH_RUNTIME"}
    base["GRADIO_ANALYTICS_ENABLED"] = "False"
    if threads:
        base["OMP_NUM_THREADS"] = str(threads)
    cases = {
        "build the page only": ([python, "-c", DEMO_CODE, "-", ""], base),
        "demo screen, light (no map)": ([python, "-c", DEMO_CODE, str(one_file), ""], base),
        "demo screen, torch (no map)": ([python, "-c", DEMO_CODE, str(one_file), ""], dict(base, STETH_RUNTIME="torch")),
        "demo screen + map, light": ([python, "-c", DEMO_CODE, str(one_file), "map"], base),
    }
    for cmd, env in cases.values():  # the file cache, once
        _run(cmd, env)
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    for _ in range(repeat):  # interleaved
        for name, (cmd, env) in cases.items():
            wall, rss, _ = _run(cmd, env)
            runs[name].append((wall, rss))
    out = {}
    for name, values in runs.items():
        walls = [w for w, _ in values]
        out[name] = {"wall_s_median": round(statistics.median(walls), 3), "wall_s_min": round(min(walls), 3),
                     "peak_rss_mb_max": round(max(r for _, r in values), 1)}
    page, light = out["build the page only"], out["demo screen, light (no map)"]
    heavy, mapped = out["demo screen, torch (no map)"], out["demo screen + map, light"]
    out["screening after the page is built, s"] = {
        "light": round(light["wall_s_median"] - page["wall_s_median"], 2),
        "torch": round(heavy["wall_s_median"] - page["wall_s_median"], 2),
        "light + map": round(mapped["wall_s_median"] - page["wall_s_median"], 2)}
    out["ratios"] = {"torch / light wall": round(heavy["wall_s_median"] / light["wall_s_median"], 2),
                     "map / light wall": round(mapped["wall_s_median"] / light["wall_s_median"], 2),
                     "torch / light peak memory": round(heavy["peak_rss_mb_max"] / light["peak_rss_mb_max"], 2),
                     "map / light peak memory": round(mapped["peak_rss_mb_max"] / light["peak_rss_mb_max"], 2)}
    return out


def demo_warm(one_file: Path, threads: int | None, rounds: int = 2) -> dict:
    """Seconds per demo request on a warm page: screening alone, and with the map (median)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
        os.environ["STETH_ONNX_THREADS"] = str(threads)
    from steth_hub import demo

    screener = demo.Screener(demo.ModelCatalog(), demo.DemoSettings())
    cases = {"request, light (no map)": False, "request + map": True}
    for explain in cases.values():  # first-call costs: models, explainer, imports
        screener(str(one_file), None, explain=explain)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds * 3):
        for name, explain in cases.items():
            start = time.perf_counter()
            out = screener(str(one_file), None, explain=explain)
            times[name].append(time.perf_counter() - start)
            assert "error" not in out[4], out[4]
    out = {name: {"s_median": round(statistics.median(v), 3), "s_min": round(min(v), 3)} for name, v in times.items()}
    out["map / light"] = round(out["request + map"]["s_median"] / out["request, light (no map)"]["s_median"], 2)
    return out


def warm(files: list[Path], threads: int | None, model: str | None, rounds: int = 2) -> dict:
    import torch

    from steth_hub.screening import load_model, screen_many

    if threads:
        torch.set_num_threads(threads)
        os.environ["STETH_ONNX_THREADS"] = str(threads)
    models = {"light (ONNX)": load_model(model, runtime="onnx"), "torch": load_model(model, runtime="torch")}
    out = {}
    for model in models.values():
        screen_many(files[:3], model=model, progress=False)  # first-call costs (allocations, caches)
    for _ in range(rounds):  # alternated, so a busy spell of the machine is not charged to one path only
        for name, model in models.items():
            start = time.perf_counter()
            results, failures = screen_many(files, model=model, progress=False)
            seconds = time.perf_counter() - start
            entry = out.setdefault(name, {"recordings": len(results), "failed": len(failures), "seconds": [],
                                          "probabilities": [r.probability for r in results]})
            entry["seconds"].append(round(seconds, 3))
    for entry in out.values():
        entry["recordings_per_s"] = round(entry["recordings"] / min(entry["seconds"]), 1)  # best round
    light, heavy = out["light (ONNX)"], out["torch"]
    diffs = [abs(a - b) for a, b in zip(light.pop("probabilities"), heavy.pop("probabilities"))]
    out["max_abs_diff_probability"] = max(diffs) if diffs else None
    out["light / torch throughput"] = round(light["recordings_per_s"] / heavy["recordings_per_s"], 2)
    return out


def _size_mb(path: Path) -> float:
    total = 0
    for root, _, names in os.walk(path):
        for name in names:
            p = Path(root) / name
            if not p.is_symlink():
                total += p.stat().st_size
    return round(total / 1024**2, 1)


def install(extras: list[str]) -> dict:
    out = {}
    with tempfile.TemporaryDirectory(prefix="steth-install-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            if (REPO / name).exists():
                shutil.copy2(REPO / name, src / name)
        ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
        for name in ("steth_hub", "plugins"):
            shutil.copytree(REPO / name, src / name, ignore=ignore)
        for extra in extras:
            venv = Path(tmp) / f"venv-{extra}"
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            empty = _size_mb(venv)
            start = time.perf_counter()
            subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                            f"{src}[{extra}]"], check=True, capture_output=True)
            seconds = time.perf_counter() - start
            out[extra] = {"install_s": round(seconds, 1), "venv_mb": _size_mb(venv), "empty_venv_mb": empty}
            shutil.rmtree(venv, ignore_errors=True)
    if "screen" in out and "train" in out:
        out["train / screen size"] = round(out["train"]["venv_mb"] / out["screen"]["venv_mb"], 1)
        out["train / screen time"] = round(out["train"]["install_s"] / out["screen"]["install_s"], 1)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder or name (default: the embedded default model)")
    parser.add_argument("--repeat", type=int, default=5, help="cold runs per case (interleaved)")
    parser.add_argument("--files", type=int, default=0, help="recordings for the warm throughput (0: all)")
    parser.add_argument("--threads", type=int, default=1, help="threads for torch and ONNX Runtime (0: their default)")
    parser.add_argument("--rounds", type=int, default=2, help="warm passes per path (alternated; the best counts)")
    parser.add_argument("--install", default="", help="extras to install into fresh venvs, e.g. screen,train")
    parser.add_argument("--demo", action="store_true", help="also the demo's screening path, cold")
    parser.add_argument("--skip-cold", action="store_true")
    parser.add_argument("--skip-warm", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    files, source = recording_files("*/*.wav")
    if args.files:
        files = files[:args.files]
    threads = args.threads or None
    report = {"machine": {"platform": platform.platform(), "python": platform.python_version(),
                          "cpus": os.cpu_count(), "threads": threads}, "recordings": source,
              "model": args.model or "the default model"}
    one = next(f for f in files if "kauh" in str(f).lower()) if any("kauh" in str(f).lower() for f in files) else files[0]
    if not args.skip_cold:
        report["cold"] = cold(one, args.repeat, threads, args.model)
        report["cold"]["file"] = str(one)
    if args.demo:
        report["demo"] = demo_cold(one, args.repeat, threads)
        report["demo"]["warm"] = demo_warm(one, threads, args.rounds)
        report["demo"]["file"] = str(one)
    if not args.skip_warm:
        report["warm"] = warm(files, threads, args.model, args.rounds)
    if args.install:
        report["install"] = install([e.strip() for e in args.install.split(",") if e.strip()])
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
