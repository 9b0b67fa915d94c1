"""Running a federation: clinic partitions, and a SuperLink with one SuperNode per clinic on loopback.

:func:`partition_corpus` cuts one corpus into patient-disjoint clinic corpora (and optionally a
held-out corpus). :func:`run_federation` starts Flower's deployment engine on 127.0.0.1 — one
``flower-superlink`` and one ``flower-supernode`` per clinic, each on its own port — runs the
Flower app of this package with ``flwr run``, prints a line per round, checks the saved model
(``flwr run`` exits 0 even when the run failed) and stops every process it started, by PID, on
success, failure or Ctrl-C. :func:`run_clinic` runs one clinic alone against a remote SuperLink.

Flower's telemetry, update checks and runtime dependency installation are switched off and
``FLWR_HOME`` is a temporary folder. Flower's simulation engine (Ray) is never used.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from steth_hub.errors import ConfigError, CorpusError, StethError

log = logging.getLogger(__name__)

APP_DIR = Path(__file__).resolve().parent
LOOPBACK = "127.0.0.1"
FLOWER_ENV = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
              "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
PARTITION_KEYS = ("source", "device", "site", "random")
PARTITION_FILE = "partition.json"


class FederatedRunError(StethError):
    """The federated run did not produce a model."""


# --------------------------------------------------------------------------- partitions
def _patient_key(rows: list[dict], by: str) -> str:
    if by == "source":
        return str(rows[0]["source"])
    values = Counter(str(r.get(by) or "unknown") for r in rows)
    return sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]  # the patient's most common value


def _assign(patients: dict[str, dict], by: str, k: int, seed: int) -> list[list[str]]:
    """Patients into ``k`` groups: by a column's value (groups merged, largest first, to reach k) or at random."""
    if by == "random":
        rng = np.random.default_rng(seed)
        clinics: list[list[str]] = [[] for _ in range(k)]
        for label in (1, 0):  # stratified by label: each clinic gets its share of asthma patients
            ids = sorted(p for p, info in patients.items() if info["label"] == label)
            ids = [ids[i] for i in rng.permutation(len(ids))]
            for i, pid in enumerate(ids):
                clinics[i % k].append(pid)
        return [sorted(c) for c in clinics]
    groups: dict[str, list[str]] = defaultdict(list)
    for pid, info in patients.items():
        groups[info["key"]].append(pid)
    if len(groups) < k:
        raise ConfigError(f"--by {by} gives only {len(groups)} group(s) ({', '.join(sorted(groups))}) for "
                          f"{k} clinics", fix=(f"use --clinics {len(groups)} or fewer, or --by random" if len(groups) >= 2
                                               else f"use --by random, or another --by than {by}"))
    bins: list[list[str]] = [[] for _ in range(k)]
    for _, members in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        smallest = min(range(k), key=lambda i: (len(bins[i]), i))
        bins[smallest].extend(members)
    return [sorted(b) for b in bins]


def _splits_for(entries) -> dict:
    """Patient folds for a clinic corpus: stratified where the clinic has enough patients, else one fold."""
    from steth_hub.corpus.splits import patient_folds, splits_record

    pids, labels = [e.patient_id for e in entries], [e.label for e in entries]
    for n in (5, 4, 3, 2):
        try:
            folds = patient_folds(pids, labels, n_folds=n, seed=0)
        except CorpusError:
            continue
        return splits_record(folds, pids, labels, n_folds=n, seed=0)
    folds = {p: 0 for p in sorted(set(pids))}
    record = splits_record(folds, pids, labels, n_folds=1, seed=0)
    record["method"] = "one fold: too few patients per class for stratified folds"
    return record


def _summary_of(entries, key: str) -> dict:
    patients = {e.patient_id: e.label for e in entries}
    return {"patients": len(patients), "asthma_patients": int(sum(patients.values())),
            "recordings": len(entries),
            "by_" + key: dict(sorted(Counter(str(getattr(e, key) or "unknown") for e in entries).items()))}


def partition_corpus(corpus_dir, out, *, by: str = "source", clinics: int = 2, holdout_fold: int | None = None,
                     seed: int = 0, overwrite: bool = False) -> dict:
    """Write one corpus per clinic under ``out`` (``clinic-1``...), patient-disjoint, and ``partition.json``.

    ``holdout_fold``: the patients of that fold of the corpus's own patient folds go to ``out/heldout``
    (the same held-out patients for federated, centralised and single-clinic training).
    """
    from steth_hub.corpus import load_corpus
    from steth_hub.corpus.build import _entries_from
    from steth_hub.corpus.store import corpus_info, write_corpus
    from steth_hub.fileio import atomic_write_json, check_output_folder

    if by not in PARTITION_KEYS:
        raise ConfigError(f"--by {by!r} is not one of {', '.join(PARTITION_KEYS)}", fix="use --by source, device, "
                                                                                         "site or random")
    if clinics < 2:
        raise ConfigError(f"--clinics must be 2 or more, got {clinics}", fix="use --clinics 2 or more")
    src = Path(corpus_dir)
    corpus = load_corpus(src)
    out = check_output_folder(out, [src], markers=(PARTITION_FILE,), overwrite=overwrite, what="partition")
    entries = _entries_from(corpus, src.name)
    folds = dict(corpus.splits.get("folds") or {})
    if holdout_fold is not None and int(holdout_fold) not in set(folds.values()):
        raise ConfigError(f"the corpus has no fold {holdout_fold} (folds: {sorted(set(folds.values()))})",
                          path=src, fix="pick one of the corpus's folds (steth corpus info)")
    heldout = {p for p, f in folds.items() if holdout_fold is not None and int(f) == int(holdout_fold)}
    by_patient: dict[str, list] = defaultdict(list)
    for e in entries:
        by_patient[e.patient_id].append(e)
    patients = {p: {"label": int(es[0].label), "key": _patient_key([vars(x) for x in es], by)}
                for p, es in by_patient.items() if p not in heldout}
    assignment = _assign(patients, by, int(clinics), int(seed))
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"corpus": str(src.resolve()), "by": by, "clinics": [], "seed": int(seed),
                               "holdout_fold": holdout_fold, "heldout": None}
    written = []
    for i, members in enumerate(assignment, start=1):
        chosen = [e for p in members for e in by_patient[p]]
        if not chosen:
            raise ConfigError(f"clinic {i} received no patient", fix="use fewer clinics")
        name = f"clinic-{i}"
        info = corpus_info("federated-partition", chosen, src=str(src.resolve()),
                           extra={"partition": {"by": by, "clinic": name, "of": str(src.resolve())}})
        qc = {"source": "federated-partition", "of": str(src.resolve()), "counts": {"imported": len(chosen)},
              "imported": [{"recording_id": e.recording_id, "warnings": list(e.warnings)} for e in chosen],
              "skipped": [], "conflicts": [], "duplicates": []}
        write_corpus(out / name, chosen, splits=_splits_for(chosen), qc=qc, info=info)
        row = {"name": name, "path": str((out / name).resolve()), **_summary_of(chosen, by if by != "random" else "source")}
        summary["clinics"].append(row)
        written.append(set(members))
    if heldout:
        chosen = [e for p in sorted(heldout) for e in by_patient[p]]
        info = corpus_info("federated-heldout", chosen, src=str(src.resolve()),
                           extra={"partition": {"heldout_fold": int(holdout_fold), "of": str(src.resolve())}})
        qc = {"source": "federated-heldout", "of": str(src.resolve()), "counts": {"imported": len(chosen)},
              "imported": [], "skipped": [], "conflicts": [], "duplicates": []}
        write_corpus(out / "heldout", chosen, splits=_splits_for(chosen), qc=qc, info=info)
        summary["heldout"] = {"path": str((out / "heldout").resolve()), **_summary_of(chosen, "source")}
        written.append(heldout)
    union = set().union(*written)
    if sum(len(w) for w in written) != len(union):
        raise RuntimeError("internal error: a patient was given to two partitions")
    summary["patient_disjoint"] = True
    atomic_write_json(out / PARTITION_FILE, summary)
    return summary


def format_partition(summary: dict) -> str:
    lines = [f"partition of {summary['corpus']} by {summary['by']} (patient-disjoint):"]
    for c in summary["clinics"]:
        detail = ", ".join(f"{k} {v}" for k, v in next(v for k, v in c.items() if k.startswith("by_")).items())
        lines.append(f"  {c['name']}: {c['patients']} patients ({c['asthma_patients']} asthma), "
                     f"{c['recordings']} recordings [{detail}]")
    if summary.get("heldout"):
        h = summary["heldout"]
        lines.append(f"  heldout (fold {summary['holdout_fold']}): {h['patients']} patients "
                     f"({h['asthma_patients']} asthma), {h['recordings']} recordings")
    return "\n".join(lines)


# --------------------------------------------------------------------------- processes
def flower_available() -> None:
    import importlib.util

    if importlib.util.find_spec("flwr") is None:
        raise ConfigError("Flower is not installed", fix="pip install 'steth-hub[federated]'")


def _executable(name: str) -> str:
    here = Path(sys.executable).parent / name
    if here.is_file():
        return str(here)
    found = shutil.which(name)
    if not found:
        raise ConfigError(f"{name} not found beside {sys.executable} or on PATH",
                          fix="pip install 'steth-hub[federated]' into this environment")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def flower_environment(home: Path, threads: int | None = None) -> dict:
    env = dict(os.environ)
    env.update(FLOWER_ENV)
    env["FLWR_HOME"] = str(home)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")  # flower-superexec, flwr-*
    env.setdefault("PYTHONUNBUFFERED", "1")
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        env.setdefault(key, "1")  # nothing is downloaded at run time
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
        env["STETH_FEDERATED_THREADS"] = str(threads)
    return env


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids[ppid].append(int(entry.name))
    return kids


def descendants(pids: Sequence[int]) -> list[int]:
    """Every live process below ``pids`` (children, grandchildren...)."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with accelerate
        psutil = None
    found: list[int] = []
    if psutil is not None:
        for pid in pids:
            try:
                found.extend(c.pid for c in psutil.Process(pid).children(recursive=True))
            except psutil.Error:
                continue
        return sorted(set(found))
    kids = _children()
    stack = list(pids)
    while stack:
        for child in kids.get(stack.pop(), []):
            if child not in found:
                found.append(child)
                stack.append(child)
    return sorted(found)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class ProcessGroup:
    """The processes a run starts, recorded by PID (with everything they spawn) and stopped by PID."""

    def __init__(self, record: Path | None = None):
        self.started: dict[str, subprocess.Popen] = {}
        self.seen: dict[int, str] = {}
        self.record = record

    def start(self, name: str, argv: list[str], env: dict, log_path: Path) -> subprocess.Popen:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(log_path, "ab")
        try:
            proc = subprocess.Popen(argv, env=env, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)  # Ctrl-C reaches us only; we stop them by PID
        finally:
            handle.close()
        self.started[name] = proc
        self.seen[proc.pid] = name
        self.save()
        return proc

    def pids_of(self, name: str) -> list[int]:
        """A started process and everything below it."""
        proc = self.started[name]
        return [proc.pid, *descendants([proc.pid])]

    def snapshot(self) -> None:
        """Remember every process below the started ones (detached children included)."""
        for name, proc in self.started.items():
            for pid in descendants([proc.pid]):
                self.seen.setdefault(pid, f"{name} (child)")
        self.save()

    def save(self) -> None:
        if self.record is not None:
            from steth_hub.fileio import atomic_write_json

            atomic_write_json(self.record, {"started": {n: p.pid for n, p in self.started.items()},
                                            "pids": {str(pid): name for pid, name in sorted(self.seen.items())}})

    def stop(self, names: Sequence[str] | None = None, grace: float = 5.0) -> list[int]:
        """SIGTERM the named (default: all) processes and their descendants by PID, SIGKILL what remains."""
        names = list(self.started) if names is None else list(names)
        self.snapshot()
        targets: list[int] = []
        for name in names:
            targets.extend(self.pids_of(name))
        targets.extend(pid for pid, owner in self.seen.items()
                       if owner.split(" ")[0] in names and pid not in targets)
        targets = [pid for pid in dict.fromkeys(targets) if _alive(pid)]
        for pid in targets:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace
        while time.time() < deadline and any(_alive(p) for p in targets):
            for name in names:
                self.started[name].poll()
            time.sleep(0.1)
        for pid in targets:
            if _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for name in names:
            try:
                self.started[name].wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass
        return targets

    def kill(self, name: str) -> list[int]:
        """SIGKILL one started process and its descendants at once (a crash, for the fault-tolerance test)."""
        targets = [p for p in self.pids_of(name) if _alive(p)]
        for pid in targets:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.started[name].wait(timeout=10)
        return targets

    def alive(self) -> list[int]:
        return [pid for pid in self.seen if _alive(pid)]


def _wait_for_port(port: int, proc: subprocess.Popen, what: str, log_path: Path, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise FederatedRunError(f"{what} exited with status {proc.returncode}: {_tail(log_path)}",
                                    path=log_path, fix="read the log; another program may hold the port")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            if s.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.2)
    raise FederatedRunError(f"{what} did not open {LOOPBACK}:{port} within {timeout:.0f} s", path=log_path,
                            fix="read the log")


def _tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def _toml_string(value: str) -> str:
    return json.dumps(str(value))  # a JSON string is a TOML basic string


def format_round(entry: dict) -> str:
    """One progress line."""
    if entry.get("event") == "round" and int(entry.get("round", 0)) == 0:
        return (f"round 0: {entry.get('clinics')} clinics agreed on the input normalisation "
                f"(patients per clinic: {', '.join(str(p) for p in entry.get('patients', []))})")
    if entry.get("event") == "round":
        text = (f"round {entry['round']}/{entry.get('rounds')}: {entry.get('clinics_trained')}/"
                f"{entry.get('clinics_sampled')} clinics trained, {entry.get('seconds')} s, "
                f"{(entry.get('bytes_down', 0) + entry.get('bytes_up', 0)) / 1e6:.2f} MB moved")
        val = entry.get("clinic_validation") or {}
        if float(val.get("auroc", -1)) >= 0:
            text += f", clinics' validation AUROC {val['auroc']:.3f}"
        held = entry.get("heldout")
        if held and held.get("auroc") is not None:
            ci = (f" [{held['auroc_low']:.2f}, {held['auroc_high']:.2f}]"
                  if held.get("auroc_low") is not None else "")
            text += f", held-out patient AUROC {held['auroc']:.3f}{ci} ({held['patients']} patients)"
        if entry.get("failures"):
            text += f"; {len(entry['failures'])} clinic(s) failed: {entry['failures'][0][:120]}"
        return text
    if entry.get("event") == "resumed":
        return f"resumed from the global model saved after round {entry['round']}"
    if entry.get("event") == "failed":
        return f"the server failed: {entry.get('error')}"
    if entry.get("event") == "done":
        return f"saved the federated model to {entry.get('out')}"
    return str(entry.get("message") or entry)


def _check_torch_classifier(experiment: dict) -> None:
    from steth_hub.registry import get_registry
    from steth_hub.torch_classifier import TorchClassifier

    cls = get_registry().get("classifier", experiment["classifier"]).load()
    if not issubclass(cls, TorchClassifier):
        raise ConfigError(f"classifier {experiment['classifier']!r} is not a torch classifier: federated training "
                          "averages network weights", fix="name a torch classifier plugin in the config (ast, "
                                                          "densenet201, efficientat...)")


def run_federation(config, clinics: Sequence[str | os.PathLike], rounds: int, out: str | os.PathLike, *,
                   heldout: str | os.PathLike | None = None, strategy: str = "fedavg", proximal_mu: float = 0.01,
                   min_clinics: int | None = None, local_epochs: float = 1.0, valid_fraction: float = 0.2,
                   dp_noise: float = 0.0, dp_clip: float = 1.0, seed: int = 0, resume: bool = False,
                   name: str | None = None, overrides: dict | None = None, timeout: float = 3600.0,
                   threads: int | None = None, work: str | os.PathLike | None = None,
                   echo: Callable[[str], None] = print, on_progress: Callable[[dict, ProcessGroup], None] | None = None,
                   message_log: str | os.PathLike | None = None, keep_home: bool = False,
                   superlink: str | None = None, root_certificates: str | os.PathLike | None = None,
                   insecure: bool = False) -> dict:
    """Run a whole federation on this machine (loopback only) and save the global model to ``out``.

    With ``superlink`` (HOST:PORT of a SuperLink already running, on this machine, clinics elsewhere)
    nothing is started but ``flwr run``: the clinics connect with ``steth federated clinic`` and
    ``min_clinics`` of them are awaited. TLS needs ``root_certificates`` unless ``insecure``.

    Returns a summary: the progress entries, the PIDs started and stopped, the seconds taken.
    ``on_progress(entry, processes)`` is called for every progress entry (tests kill a clinic there).
    Raises :class:`FederatedRunError` when no model was saved.
    """
    from steth_hub.federated.core import experiment_dict
    from steth_hub.fileio import atomic_write_json, atomic_write_text, check_output_folder

    flower_available()
    if strategy not in ("fedavg", "fedprox"):
        raise ConfigError(f"strategy {strategy!r} is not fedavg or fedprox", fix="use --strategy fedavg or fedprox")
    clinics = [Path(c) for c in clinics]
    if superlink:
        if clinics:
            raise ConfigError("--clinics starts clinics on this machine; with --superlink the clinics run elsewhere",
                              fix="drop --clinics (start each clinic with steth federated clinic) or --superlink")
        if not min_clinics:
            raise ConfigError("with --superlink, say how many clinics to wait for", fix="pass --min-clinics N")
        if not insecure and not root_certificates:
            raise ConfigError("the SuperLink is reached over TLS: give its CA certificate",
                              fix="pass --root-certificates ca.crt (or --insecure on a trusted test network only)")
    elif len(clinics) < 1:
        raise ConfigError("no clinic corpus given", fix="pass --clinics DIR (one per clinic)")
    if len({c.resolve() for c in clinics}) != len(clinics):
        raise ConfigError("a clinic corpus is given twice: its patients would count twice",
                          fix="pass each clinic's corpus folder once")
    for c in clinics:
        if not (c / "corpus.json").is_file():
            raise ConfigError("not a corpus folder (no corpus.json)", path=c,
                              fix="pass folders written by steth corpus import/merge or steth federated partition")
    if heldout is not None and not (Path(heldout) / "corpus.json").is_file():
        raise ConfigError("the held-out corpus is not a corpus folder", path=heldout,
                          fix="pass the heldout/ folder written by steth federated partition --holdout-fold")
    if int(rounds) < 1:
        raise ConfigError(f"--rounds must be at least 1, got {rounds}", fix="use --rounds 3")
    min_clinics = int(min_clinics if min_clinics is not None else len(clinics))
    if not 1 <= min_clinics <= (len(clinics) if not superlink else min_clinics):
        raise ConfigError(f"--min-clinics {min_clinics} must be between 1 and the {len(clinics)} clinics",
                          fix=f"use --min-clinics {len(clinics)} or fewer")
    experiment = experiment_dict(config)
    _check_torch_classifier(experiment)
    out = check_output_folder(out, [*clinics, heldout], markers=("steth.json",), what="model")
    work = Path(work) if work else out.with_name(out.name + ".federated")
    if work.exists() and not resume:
        for stale in ("global.json", "global.safetensors", "progress.jsonl"):
            (work / stale).unlink(missing_ok=True)
    elif resume and not (work / "global.json").is_file():
        raise ConfigError("nothing to resume: no saved global model", path=work,
                          fix="start a fresh run (drop --resume)")
    work.mkdir(parents=True, exist_ok=True)
    (work / "progress.jsonl").unlink(missing_ok=True)
    logs = work / "logs"
    home = Path(tempfile.mkdtemp(prefix="steth-flwr-home-"))
    env = flower_environment(home, threads)
    port = free_port()
    connection = f'[superlink]\ndefault = "steth"\n\n[superlink.steth]\n'
    if superlink:
        connection += f"address = {_toml_string(superlink)}\n"
        connection += ("insecure = true\n" if insecure else
                       f"root-certificates = {_toml_string(Path(root_certificates).resolve())}\n")
    else:
        connection += f'address = "{LOOPBACK}:{port}"\ninsecure = true\n'
    atomic_write_text(home / "config.toml", connection)
    job = {"experiment": experiment, "rounds": int(rounds), "out": str(out), "work": str(work.resolve()),
           "heldout": str(Path(heldout).resolve()) if heldout else "", "strategy": strategy,
           "proximal_mu": float(proximal_mu), "min_clinics": min_clinics, "local_epochs": float(local_epochs),
           "valid_fraction": float(valid_fraction), "dp_noise": float(dp_noise), "dp_clip": float(dp_clip),
           "seed": int(seed), "resume": bool(resume), "name": name, "overrides": overrides or {},
           "round_timeout": float(timeout), "connect_timeout": 600.0}
    atomic_write_json(work / "job.json", job)
    atomic_write_text(work / "run-config.toml", f"job = {_toml_string(work.resolve() / 'job.json')}\n")
    procs = ProcessGroup(work / "pids.json")
    started = time.time()
    entries: list[dict] = []
    summary: dict[str, Any] = {"work": str(work), "out": str(out), "port": port}
    flwr_run = None
    try:
        superlink_log = logs / "superlink.log"
        link = None
        if not superlink:
            link = procs.start("superlink", [_executable("flower-superlink"), "--insecure", "--host", LOOPBACK,
                                             "--port", str(port), "--database", str(home / "state.db")],
                               env, superlink_log)
            _wait_for_port(port, link, "flower-superlink", superlink_log)
        for i, clinic in enumerate(clinics, start=1):
            node_config = home / f"clinic-{i}.toml"
            lines = [f"corpus = {_toml_string(clinic.resolve())}", f'clinic = "clinic-{i}"']
            if message_log:
                lines.append(f"message-log = {_toml_string(Path(message_log).resolve())}")
            atomic_write_text(node_config, "\n".join(lines) + "\n")
            procs.start(f"clinic-{i}", [_executable("flower-supernode"), "--insecure", "--superlink",
                                        f"{LOOPBACK}:{port}", "--host", LOOPBACK, "--port", str(free_port()),
                                        "--node-config", str(node_config)], env, logs / f"clinic-{i}.log")
        run_log = logs / "flwr-run.log"
        flwr_run = procs.start("flwr-run", [_executable("flwr"), "run", str(APP_DIR), "steth", "--run-config",
                                            str(work / "run-config.toml"), "--stream"], env, run_log)
        progress = work / "progress.jsonl"
        read = 0
        deadline = time.time() + float(timeout) * (int(rounds) + 1)
        while True:
            finished = flwr_run.poll() is not None
            if progress.is_file():
                lines = progress.read_text(encoding="utf-8").splitlines()
                for line in lines[read:]:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        break
                    read += 1
                    entries.append(entry)
                    echo(format_round(entry))
                    if on_progress is not None:
                        on_progress(entry, procs)
            if finished or any(e.get("event") in ("done", "failed") for e in entries):
                if not finished:  # let flwr run finish streaming the log
                    try:
                        flwr_run.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        pass
                break
            if link is not None and link.poll() is not None:
                raise FederatedRunError(f"the SuperLink exited ({link.returncode}): {_tail(superlink_log)}",
                                        path=superlink_log, fix="read the log")
            if time.time() > deadline:
                raise FederatedRunError(f"the run took longer than {deadline - started:.0f} s", path=work,
                                        fix="raise --timeout, or check the clinics' logs in " + str(logs))
            procs.snapshot()
            time.sleep(0.5)
        failed = [e for e in entries if e.get("event") == "failed"]
        done = [e for e in entries if e.get("event") == "done"]
        model_ok = (out / "steth.json").is_file() and (out / "steth.json").stat().st_mtime >= started - 1
        if failed or not done or not model_ok:  # `flwr run` exits 0 even when the run failed
            reason = failed[-1]["error"] if failed else (_tail(run_log) or "no model was saved")
            raise FederatedRunError(f"the federated run failed: {reason}", path=run_log,
                                    fix=f"read the logs in {logs}; start again with --resume to continue from the "
                                        "last completed round")
    finally:
        summary["stopped"] = procs.stop()
        summary["alive_after_stop"] = procs.alive()
        summary["pids"] = dict(procs.seen)
        if not keep_home:
            shutil.rmtree(home, ignore_errors=True)
    summary.update(entries=entries, seconds=round(time.time() - started, 1))
    return summary


# --------------------------------------------------------------------------- one clinic alone
def run_clinic(superlink: str, corpus, *, root_certificates: str | None = None, insecure: bool = False,
               auth_private_key: str | None = None, port: int | None = None, threads: int | None = None) -> int:
    """Run one clinic (a SuperNode) against a SuperLink elsewhere, in the foreground, until it stops or Ctrl-C."""
    flower_available()
    corpus = Path(corpus)
    if not (corpus / "corpus.json").is_file():
        raise ConfigError("not a corpus folder (no corpus.json)", path=corpus,
                          fix="pass a folder written by steth corpus import/merge or steth federated partition")
    if not insecure and not root_certificates:
        raise ConfigError("a clinic connects over TLS by default: give the SuperLink's CA certificate",
                          fix="pass --root-certificates ca.crt (or --insecure on a trusted test network only)")
    home = Path(tempfile.mkdtemp(prefix="steth-flwr-home-"))
    env = flower_environment(home, threads)
    node_config = home / "clinic.toml"
    node_config.write_text(f"corpus = {_toml_string(corpus.resolve())}\nclinic = {_toml_string(corpus.name)}\n",
                           encoding="utf-8")
    argv = [_executable("flower-supernode"), "--superlink", superlink, "--host", LOOPBACK,
            "--port", str(port or free_port()), "--node-config", str(node_config)]
    argv += ["--insecure"] if insecure else ["--root-certificates", str(root_certificates)]
    if auth_private_key:  # the SuperLink (--enable-supernode-auth) knows the public key: flwr supernode register
        argv += ["--auth-supernode-private-key", str(auth_private_key)]
    procs = ProcessGroup(home / "pids.json")
    proc = None
    try:
        proc = subprocess.Popen(argv, env=env, start_new_session=True)
        procs.started["clinic"] = proc
        procs.seen[proc.pid] = "clinic"
        while proc.poll() is None:
            procs.snapshot()
            time.sleep(1.0)
        return int(proc.returncode or 0)
    finally:
        if proc is not None:
            procs.stop()
        shutil.rmtree(home, ignore_errors=True)
