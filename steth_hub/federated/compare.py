"""Federated vs centralised vs each clinic alone, scored on the same held-out patients.

``python -m steth_hub.federated.compare --config CONFIG --partition DIR --rounds R --local-epochs E
--federated MODEL --out DIR`` trains, in this process and with the same local training code and
schedule as the clinics (R rounds of E epochs, the optimiser restarted every round):

* **centralised**: one model on the union of the clinics' training patients (what pooling the
  recordings in one place would give);
* **each clinic alone**: one model per clinic on its own training patients (a clinic whose
  patients are all of one class cannot train a screening model: reported as such);

and scores them, with the federated model saved by ``steth federated run``, on the partition's
``heldout/`` patients: patient-level AUROC with a 95% patient-bootstrap interval, pooled and
within each source. Writes ``comparison.json`` and ``comparison.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from steth_hub.federated import core


def _scores(model, clips, features) -> dict:
    out = {"pooled": _auroc(model, clips, features)}
    sources = sorted({str(p).split(":")[0] for p in clips.patient_ids})
    for source in sources:
        keep = np.array([str(p).startswith(source + ":") for p in clips.patient_ids])
        out[source] = _auroc(model, clips.subset(np.flatnonzero(keep)), features[keep])
    return out


def _auroc(model, clips, features) -> dict:
    s = core.patient_scores(model, clips, features=features)
    return {k: s[k] for k in ("auroc", "auroc_low", "auroc_high", "patients", "asthma_patients")}


def _concat(sets):
    from steth_hub.clips import ClipSet

    first = sets[0]
    return ClipSet(waveforms=np.concatenate([s.waveforms for s in sets]), sample_rate=first.sample_rate,
                   labels=np.concatenate([s.labels for s in sets]),
                   recording_ids=np.concatenate([s.recording_ids for s in sets]),
                   patient_ids=np.concatenate([s.patient_ids for s in sets]),
                   starts=np.concatenate([s.starts for s in sets]), meta=dict(first.meta))


def train_alone(experiment: dict, train, heldout, *, rounds: int, local_epochs: float, seed: int) -> dict:
    """The clinics' schedule on one training set: normalisation, seeded start, R rounds of E epochs."""
    import torch

    started = time.perf_counter()
    if len(np.unique(train.labels)) < 2:
        return {"trained": False, "reason": "all its training patients have one label: no screening model can be "
                                            "trained", "patients": int(len(np.unique(train.patient_ids)))}
    model = core.new_classifier(experiment)
    raw = core.featurise(model, train)
    torch.manual_seed(seed)
    core.fit_normalisation(model, raw)
    model = core.initial_model(experiment, raw.shape[1:], core.normalisation_state(model), seed=seed)
    x = model.normalise(raw)
    held_x = model.normalise(core.featurise(model, heldout))
    settings = core.local_settings(experiment)
    per_round = []
    for rnd in range(1, rounds + 1):
        core.train_local(model, x, train.labels, epochs=local_epochs, settings=settings, seed=seed + rnd)
        per_round.append(_auroc(model, heldout, held_x)["auroc"])
    return {"trained": True, "patients": int(len(np.unique(train.patient_ids))),
            "asthma_patients": int(len({p for p, y in zip(train.patient_ids, train.labels) if y})),
            "heldout": _scores(model, heldout, held_x), "auroc_per_round": per_round,
            "seconds": round(time.perf_counter() - started, 1)}


def replay_fedavg(experiment: dict, clinics: list, heldout, *, rounds: int, local_epochs: float, seed: int,
                  proximal_mu: float = 0.0) -> dict:
    """The federated protocol in one process: the same round 0, local training and clip-weighted averaging
    as the deployment (without Flower's transport), for more seeds than the CPU allows real runs."""
    import torch

    started = time.perf_counter()
    raws, stats, counts = [], [], []
    for train in clinics:
        model = core.new_classifier(experiment)
        raw = core.featurise(model, train)
        torch.manual_seed(seed)
        core.fit_normalisation(model, raw)
        raws.append(raw)
        stats.append(core.normalisation_state(model))
        counts.append(float(len(train)))
    shape = raws[0].shape[1:]
    norm = core.average(stats, counts)
    arrays = core.model_arrays(core.initial_model(experiment, shape, norm, seed=seed))
    fixed = {k: arrays[k] for k in norm}
    settings = core.local_settings(experiment)
    held_x = None
    per_round = []
    for rnd in range(1, rounds + 1):
        updates = []
        for train, raw in zip(clinics, raws):
            model = core.model_from_arrays(experiment, arrays, shape)
            core.train_local(model, model.normalise(raw), train.labels, epochs=local_epochs, settings=settings,
                             seed=seed + rnd, proximal_mu=proximal_mu)
            updates.append(core.model_arrays(model))
        arrays = core.average(updates, counts)
        arrays.update(fixed)
        model = core.model_from_arrays(experiment, arrays, shape)
        if held_x is None:
            held_x = core.featurise(model, heldout)
        per_round.append(_auroc(model, heldout, model.normalise(held_x))["auroc"])
    return {"heldout": _scores(model, heldout, model.normalise(held_x)), "auroc_per_round": per_round,
            "seconds": round(time.perf_counter() - started, 1)}


def compare(config, partition, *, rounds: int, local_epochs: float, federated=None, seed: int = 0,
            valid_fraction: float = 0.2, proximal_mu: float = 0.0) -> dict:
    import steth_hub

    experiment = core.experiment_dict(config)
    partition = Path(partition)
    summary = json.loads((partition / "partition.json").read_text(encoding="utf-8"))
    heldout = core.load_clinic(partition / "heldout", experiment, valid_fraction=0.0).train
    clinics = {c["name"]: core.load_clinic(c["path"], experiment, valid_fraction=valid_fraction, seed=seed)
               for c in summary["clinics"]}
    result = {"config": str(config), "partition": str(partition), "by": summary["by"], "rounds": rounds,
              "local_epochs": local_epochs, "seed": seed, "heldout_patients": int(len(np.unique(heldout.patient_ids)))}
    result["centralised"] = train_alone(experiment, _concat([c.train for c in clinics.values()]), heldout,
                                        rounds=rounds, local_epochs=local_epochs, seed=seed)
    result["alone"] = {name: dict(train_alone(experiment, c.train, heldout, rounds=rounds, local_epochs=local_epochs,
                                              seed=seed), sources=sorted({str(p).split(":")[0]
                                                                          for p in c.train.patient_ids}))
                       for name, c in clinics.items()}
    result["replay"] = replay_fedavg(experiment, [c.train for c in clinics.values()], heldout, rounds=rounds,
                                     local_epochs=local_epochs, seed=seed)
    if proximal_mu > 0:
        result["replay_fedprox"] = dict(replay_fedavg(experiment, [c.train for c in clinics.values()], heldout,
                                                      rounds=rounds, local_epochs=local_epochs, seed=seed,
                                                      proximal_mu=proximal_mu), mu=proximal_mu)
    if federated:
        model = steth_hub.from_pretrained(str(federated))
        raw = core.featurise(model, heldout)
        fed = json.loads((Path(federated) / "steth.json").read_text(encoding="utf-8"))["federated"]
        result["federated"] = {"heldout": _scores(model, heldout, model.normalise(raw)),
                               "auroc_per_round": [(r.get("heldout") or {}).get("auroc") for r in fed["rounds_log"]],
                               "bytes_per_round": [r["bytes_down"] + r["bytes_up"] for r in fed["rounds_log"]],
                               "model_bytes": fed["model_bytes"], "wall_seconds": fed["wall_seconds"],
                               "strategy": fed["strategy"], "rounds": fed["rounds"]}
    return result


def _fmt(entry: dict | None) -> str:
    if not entry or entry.get("auroc") is None:
        return "n/a"
    if entry.get("auroc_low") is None:
        return f"{entry['auroc']:.2f}"
    return f"{entry['auroc']:.2f} [{entry['auroc_low']:.2f}, {entry['auroc_high']:.2f}]"


def table(result: dict) -> str:
    rows = [result["centralised"], *result["alone"].values(), result.get("replay") or {}, result.get("federated") or {}]
    sources = sorted({k for row in rows for k, v in (row.get("heldout") or {}).items()
                      if k != "pooled" and v.get("auroc") is not None})  # a source with one class has no AUROC
    head = "| training | patients trained on | held-out AUROC, pooled | " + " | ".join(
        f"held-out AUROC within {s.upper()}" for s in sources) + " | rounds x local epochs | bytes per round | wall |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]

    def row(name, entry, bytes_, wall):
        if not entry.get("trained", True):
            return f"| {name} | {entry['patients']} | {entry['reason']} |" + " |" * (len(sources) + 3)
        held = entry["heldout"]
        return (f"| {name} | {entry.get('patients', '')} | {_fmt(held['pooled'])} | "
                + " | ".join(_fmt(held.get(s)) for s in sources)
                + f" | {result['rounds']} x {result['local_epochs']:g} | {bytes_} | {wall} |")

    if "federated" in result:
        fed = result["federated"]
        per_round = sum(fed["bytes_per_round"]) / max(1, len(fed["bytes_per_round"]))
        patients = result["centralised"].get("patients", "")
        lines.append(row(f"federated ({fed['strategy']}, {len(result['alone'])} clinics)",
                         dict(fed, patients=patients), f"{per_round / 1e6:.2f} MB", f"{fed['wall_seconds']:.0f} s"))
    if "replay" in result:
        lines.append(row(f"FedAvg replayed in one process (seed {result['seed']})",
                         dict(result["replay"], patients=result["centralised"].get("patients", "")), "-",
                         f"{result['replay']['seconds']:.0f} s"))
    lines.append(row("centralised (recordings pooled)", result["centralised"], "-",
                     f"{result['centralised'].get('seconds', 0):.0f} s"))
    for name, entry in result["alone"].items():
        lines.append(row(f"{name} alone ({', '.join(entry['sources'])})", entry, "-",
                         f"{entry.get('seconds', 0):.0f} s" if entry.get("trained") else "-"))
    return "\n".join(lines)


def seeds_table(results: list[dict]) -> str:
    """Held-out patient AUROC over seeds (each seed: its own validation split, initial weights, shuffling)."""
    def cell(values):
        values = [v for v in values if v is not None]
        if not values:
            return "n/a"
        return f"{np.mean(values):.2f} ({min(values):.2f}-{max(values):.2f})"

    def get(result, path):
        entry = result
        for key in path:
            entry = (entry or {}).get(key)
        return entry

    rows = [("FedAvg (the protocol replayed in one process)", ("replay",))]
    if "replay_fedprox" in results[0]:
        rows.append((f"FedProx, mu {results[0]['replay_fedprox']['mu']:g} (replayed)", ("replay_fedprox",)))
    rows += [
             ("centralised (recordings pooled)", ("centralised",))]
    rows += [(f"{name} alone", ("alone", name)) for name in results[0]["alone"]]
    seeds = ", ".join(str(r["seed"]) for r in results)
    lines = [f"| training ({len(results)} seeds: {seeds}) | held-out AUROC pooled, mean (min-max) | "
             "within KAUH, mean (min-max) |", "|---|---|---|"]
    for label, path in rows:
        pooled = [get(r, (*path, "heldout", "pooled", "auroc")) for r in results]
        kauh = [get(r, (*path, "heldout", "kauh", "auroc")) for r in results]
        if all(v is None for v in pooled):
            reason = get(results[0], (*path, "reason")) or "n/a"
            lines.append(f"| {label} | {reason} | |")
        else:
            lines.append(f"| {label} | {cell(pooled)} | {cell(kauh)} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--partition", required=True)
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--local-epochs", type=float, default=1.0)
    parser.add_argument("--federated", default=None, help="the model folder written by steth federated run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="seeds; the federated model (--federated) is compared with the first")
    parser.add_argument("--mu", type=float, default=0.0, help="also replay FedProx with this proximal weight")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    from steth_hub.fileio import atomic_write_json, atomic_write_text

    results = [compare(args.config, args.partition, rounds=args.rounds, local_epochs=args.local_epochs,
                       federated=args.federated if i == 0 else None, seed=seed, proximal_mu=args.mu)
               for i, seed in enumerate(args.seeds)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "comparison.json", results)
    text = table(results[0]) + "\n\n" + seeds_table(results) + "\n"
    atomic_write_text(out / "comparison.md", text)
    print(text)


if __name__ == "__main__":  # pragma: no cover
    main()
