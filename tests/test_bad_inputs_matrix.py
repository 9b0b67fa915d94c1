"""The living bad-input matrix: every row of docs/bad-inputs.md is run here, and its 'observed'
column must be what the code does now.

    .venv/bin/python -m pytest -q tests/test_bad_inputs_matrix.py                   # check the table
    STETH_UPDATE_BAD_INPUTS=1 .venv/bin/python -m pytest -q tests/test_bad_inputs_matrix.py   # rewrite 'observed'

A row is ``| id | case | expected | observed | test |``. Each id has a function below that builds
the bad input from real recordings (steth_hub/examples) or the embedded model, runs the command a
user would, and returns what a user sees: the exit status and the first error or warning line,
with temporary paths replaced by ``TMP``. A new case is a new row plus a new function; a row
without a function, or a function without a row, fails the test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "bad-inputs.md"
EXAMPLES = REPO / "steth_hub" / "examples"
KAUH = EXAMPLES / "kauh" / "EP32_N,N,A R L,30,M_middle10sec.wav"

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

CASES = {}


def case(fn):
    CASES[fn.__name__.replace("_", "-")] = fn
    return fn


def run(args, tmp) -> str:
    from steth_hub.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    text = (result.output or "") + (str(result.exception) if result.exception and result.exit_code not in (0, 1, 2)
                                    else "")
    lines = [ln.strip() for ln in text.splitlines()
             if re.match(r"^(error|failed|warning|note|WARNING)\b", ln.strip())
             or ln.strip().startswith(("  - ", "- "))]
    first = lines[0] if lines else (text.strip().splitlines() or [""])[-1]
    return f"exit {result.exit_code}: {_clean(first, tmp)}"


def _clean(text: str, tmp) -> str:
    text = text.replace(str(tmp), "TMP").replace(str(REPO), "REPO")
    text = re.sub(r"/tmp/[^\s:'\"]+", "TMP/…", text)
    text = text.replace("|", "/")
    return text[:170] + ("…" if len(text) > 170 else "")


def screen(path, tmp, *extra) -> str:
    model = [] if "--model" in extra else ["--model", "steth/ast-asthma"]  # not whichever model is the default now
    return run(["screen", path, "--quiet", *model, *extra], tmp)


def warnings_of(path) -> str:
    from steth_hub.audio import decode

    rec = decode(path)
    shown = [w for w in rec.warnings if not w.startswith("low sample rate")]
    return "decoded; warning: " + (shown[0] if shown else "(none)")


def model_copy(tmp) -> Path:
    import steth_hub

    dst = tmp / "model"
    shutil.copytree(Path(steth_hub.__file__).parent / "models" / "ast-asthma", dst,
                    ignore=shutil.ignore_patterns("model.onnx"))
    return dst


def edit_meta(folder, **changes):
    meta = json.loads((folder / "steth.json").read_text())
    for key, value in changes.items():
        if value is KeyError:
            meta.pop(key, None)
        else:
            meta[key] = value
    (folder / "steth.json").write_text(json.dumps(meta))


def load_error(folder, tmp) -> str:
    from steth_hub.classifier import load_classifier
    from steth_hub.errors import StethError

    try:
        load_classifier(folder)
    except StethError as exc:
        return "ModelError: " + _clean(str(exc), tmp)
    return "loaded"


# --------------------------------------------------------------------------- recordings
@case
def audio_missing(tmp):
    return screen(tmp / "nope.wav", tmp)


@case
def audio_folder(tmp):
    return screen(tmp, tmp)


@case
def audio_empty(tmp):
    (tmp / "empty.wav").write_bytes(b"")
    return screen(tmp / "empty.wav", tmp)


@case
def audio_random_bytes(tmp):
    (tmp / "noise.wav").write_bytes(np.random.default_rng(0).bytes(5000))
    return screen(tmp / "noise.wav", tmp)


@case
def audio_fifo(tmp):
    os.mkfifo(tmp / "pipe.wav")
    return screen(tmp / "pipe.wav", tmp)


@case
def audio_device(tmp):
    return screen("/dev/zero", tmp)


@case
def audio_8ch_192k(tmp):
    path = tmp / "big.flac"
    with sf.SoundFile(path, "w", samplerate=192000, channels=8, subtype="PCM_16", format="FLAC") as fh:
        for _ in range(60):
            fh.write(np.zeros((192000, 8), dtype=np.int16))
    return screen(path, tmp)


@case
def audio_nan(tmp):
    x, rate = sf.read(KAUH, dtype="float32")
    x[100:110] = np.nan
    sf.write(tmp / "nan.wav", x, rate, subtype="FLOAT")
    return screen(tmp / "nan.wav", tmp)


@case
def audio_silent(tmp):
    sf.write(tmp / "silent.wav", np.zeros(40000, dtype=np.float32), 4000, subtype="PCM_16")
    return screen(tmp / "silent.wav", tmp)


@case
def audio_low_rate(tmp):
    from steth_hub.audio import decode, resample

    rec = decode(KAUH)
    sf.write(tmp / "r1000.wav", resample(rec.samples, rec.sample_rate, 1000), 1000, subtype="PCM_16")
    return screen(tmp / "r1000.wav", tmp)


@case
def audio_8bit(tmp):
    x, rate = sf.read(KAUH, dtype="float32")
    sf.write(tmp / "u8.wav", x, rate, subtype="PCM_U8")
    return warnings_of(tmp / "u8.wav")


@case
def audio_8bit_values_in_16bit(tmp):
    x, rate = sf.read(KAUH, dtype="float32")
    sf.write(tmp / "q.wav", np.clip(np.round(x * 128) / 128, -1, 127 / 128), rate, subtype="PCM_16")
    return warnings_of(tmp / "q.wav")


@case
def audio_8bit_quiet_floor_model(tmp):
    quiet = EXAMPLES / "kauh" / "EP38_Asthma,E W,P R M,38,M_middle10sec.wav"  # 8-bit noise 21 dB below it
    x, rate = sf.read(quiet, dtype="float32")
    sf.write(tmp / "u8.wav", x, rate, subtype="PCM_U8")
    return screen(tmp / "u8.wav", tmp, "--model", "steth/efficientat-asthma-floor")


@case
def audio_8bit_values_in_an_array(tmp):
    from steth_hub.audio import from_array

    x, rate = sf.read(KAUH, dtype="float32")
    rec = from_array(np.clip(np.round(x * 128) / 128, -1, 127 / 128), rate)
    shown = [w for w in rec.warnings if not w.startswith("low sample rate")]
    return "wrapped; warning: " + (shown[0] if shown else "(none)")


@case
def audio_truncated(tmp):
    data = KAUH.read_bytes()
    (tmp / "cut.wav").write_bytes(data[: len(data) * 2 // 3])
    return warnings_of(tmp / "cut.wav")


@case
def audio_unstable_decision(tmp):
    from steth_hub.screening import screen

    edge = EXAMPLES / "kauh" / "BP64_asthma,E W,P L U,60,M_middle10sec.wav"
    result = screen(edge, model="steth/efficientat-asthma")  # this model asks for the stability checks
    shown = [w for w in result.warnings if w.startswith("unstable")]
    return f"screened ({result.label}, stable={result.stable}); warning: " + _clean(shown[0] if shown else "(none)", tmp)


# --------------------------------------------------------------------------- models
@case
def model_root(tmp):
    return screen(KAUH, tmp, "--model", "/")


@case
def model_missing_tensor(tmp):
    from safetensors.torch import load_file, save_file

    folder = model_copy(tmp)
    tensors = load_file(str(folder / "model.safetensors"))
    del tensors[sorted(tensors)[3]]
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return load_error(folder, tmp)


@case
def model_unexpected_tensor(tmp):
    import torch
    from safetensors.torch import load_file, save_file

    folder = model_copy(tmp)
    tensors = load_file(str(folder / "model.safetensors"))
    tensors["extra.weight"] = torch.zeros(3)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return load_error(folder, tmp)


@case
def model_stability_checks_bad(tmp):
    folder = model_copy(tmp)
    edit_meta(folder, stability_checks=[["noise", "loud"]])
    return load_error(folder, tmp)


@case
def model_threshold_nan(tmp):
    folder = model_copy(tmp)
    edit_meta(folder, threshold=float("nan"))
    return load_error(folder, tmp)


@case
def model_threshold_5(tmp):
    folder = model_copy(tmp)
    edit_meta(folder, threshold=5.0)
    return load_error(folder, tmp)


@case
def model_threshold_missing(tmp):
    folder = model_copy(tmp)
    edit_meta(folder, threshold=KeyError)
    return load_error(folder, tmp)


@case
def model_sample_rate_0(tmp):
    folder = model_copy(tmp)
    edit_meta(folder, sample_rate=0)
    return load_error(folder, tmp)


@case
def model_labels_swapped(tmp):
    folder = model_copy(tmp)
    edit_meta(folder, labels=["asthma", "not_asthma"])
    return load_error(folder, tmp)


@case
def model_weights_truncated(tmp):
    folder = model_copy(tmp)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    return load_error(folder, tmp)


@case
def model_weights_empty(tmp):
    folder = model_copy(tmp)
    (folder / "model.safetensors").write_bytes(b"")
    return load_error(folder, tmp)


@case
def model_weights_pickle(tmp):
    import torch

    folder = model_copy(tmp)
    torch.save({"w": torch.zeros(2)}, folder / "model.safetensors")
    return load_error(folder, tmp)


@case
def model_no_ast_block(tmp):
    folder = model_copy(tmp)
    edit_meta(folder, ast=KeyError)
    return screen(KAUH, tmp, "--model", folder)


@case
def model_bad_distribution(tmp):
    folder = model_copy(tmp)
    edit_meta(folder, plugin="not-installed", distribution="evil; rm -rf ~")
    return load_error(folder, tmp)


# --------------------------------------------------------------------------- manifests
def _clinic(tmp, rows: str, raw: bytes | None = None) -> Path:
    root = tmp / "clinic"
    root.mkdir()
    for i, src in enumerate(sorted((EXAMPLES / "kauh").glob("*.wav"))[:4]):
        shutil.copy(src, root / f"r{i}.wav")
    (root / "manifest.csv").write_bytes(raw if raw is not None else
                                        ("path,patient_id,diagnosis\nr0.wav,p0,asthma\nr1.wav,p1,asthma\n"
                                         "r2.wav,p2,N\n" + rows).encode("utf-8"))
    return root


def _import(root, tmp, *extra):
    return run(["corpus", "import", "manifest", root, tmp / "out", "--folds", "2", "--quiet", *extra], tmp)


@case
def manifest_misspelt_diagnosis(tmp):
    return _import(_clinic(tmp, "r3.wav,p3,Astma\n"), tmp)


@case
def manifest_path_outside(tmp):
    return _import(_clinic(tmp, "../../../../etc/passwd,p3,N\n"), tmp)


@case
def manifest_absolute_path(tmp):
    return _import(_clinic(tmp, "/etc/passwd,p3,N\n"), tmp)


@case
def manifest_latin1(tmp):
    return _import(_clinic(tmp, "", "path,patient_id,diagnosis\nr0.wav,p0,Asthme\xe9\n".encode("latin-1")), tmp)


@case
def manifest_binary(tmp):
    return _import(_clinic(tmp, "", b"\x89PNG\r\n\x1a\n\x00\x00" + bytes(range(256))), tmp)


@case
def manifest_huge_field(tmp):
    return _import(_clinic(tmp, "", ('path,patient_id,diagnosis\nr0.wav,p0,"' + "x" * 200000 + '"\n').encode()), tmp)


# --------------------------------------------------------------------------- outputs and training
def _corpus(tmp) -> Path:
    out = tmp / "data" / "corpus"
    run(["corpus", "import", "kauh", EXAMPLES / "kauh", out, "--folds", "2", "--quiet"], tmp)
    return out


def _config(tmp, text="classifier: mfcc-logreg\nmodel: {n_mfcc: 13}\nrecipe: {}\n") -> Path:
    (tmp / "c.yaml").write_text(text)
    return tmp / "c.yaml"


@case
def train_out_foreign_folder(tmp):
    corpus = _corpus(tmp)
    (tmp / "thesis").mkdir()
    (tmp / "thesis" / "chapter1.tex").write_text("years of work")
    return run(["train", "--config", _config(tmp), "--corpus", corpus, "--out", tmp / "thesis", "--quiet"], tmp)


@case
def train_out_corpus_parent(tmp):
    corpus = _corpus(tmp)
    return run(["train", "--config", _config(tmp), "--corpus", corpus, "--out", tmp / "data", "--quiet",
                "--overwrite"], tmp)


@case
def evaluate_out_corpus(tmp):
    corpus = _corpus(tmp)
    return run(["evaluate", "--config", _config(tmp), "--corpus", corpus, "--out", corpus, "--quick"], tmp)


@case
def preprocess_out_corpus(tmp):
    corpus = _corpus(tmp)
    return run(["preprocess", corpus, "--out", corpus, "--quiet", "--overwrite"], tmp)


@case
def train_bad_learning_rate(tmp):
    return run(["train", "--config", _config(tmp, "classifier: ast\nrecipe: {learning_rate: fast}\n"),
                "--corpus", tmp / "none", "--out", tmp / "m"], tmp)


@case
def train_negative_batch(tmp):
    return run(["train", "--config", _config(tmp, "classifier: ast\nrecipe: {per_device_train_batch_size: -4}\n"),
                "--corpus", tmp / "none", "--out", tmp / "m"], tmp)


@case
def train_mfcc_summary(tmp):
    from steth_hub.cli import main

    corpus = _corpus(tmp)
    result = CliRunner().invoke(main, ["train", "--config", str(_config(tmp)), "--corpus", str(corpus),
                                       "--out", str(tmp / "m"), "--quiet"])
    return f"exit {result.exit_code}: {_clean(result.output.splitlines()[0], tmp)}"


@case
def partial_left_by_kill(tmp):
    import subprocess
    import sys

    code = ("import os, signal\nfrom steth_hub.fileio import atomic_directory\n"
            f"with atomic_directory({str(tmp / 'model')!r}) as t:\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    subprocess.run([sys.executable, "-c", code], check=False)
    from steth_hub.fileio import check_output_folder
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        check_output_folder(tmp / "model", markers=("steth.json",))
    line = err.getvalue().strip().splitlines()[0]
    return re.sub(r"\.model\.\w+\.partial", ".model.XXXX.partial", _clean(line, tmp))


@case
def checkpoint_killed_mid_write(tmp):
    import contextlib
    import io

    from steth_hub.train import _has_checkpoint

    for step, state in ((10, True), (20, False)):
        folder = tmp / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"w")
        if state:
            (folder / "trainer_state.json").write_text("{}")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        chosen = _has_checkpoint(tmp)
    return f"resumes from {Path(chosen).name}; " + _clean(err.getvalue().strip().splitlines()[0], tmp)


# --------------------------------------------------------------------------- plugins
def _plugin(tmp, dist, module, code):
    (tmp / f"{module}.py").write_text(code)
    info = tmp / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[steth_hub]\n{module} = {module}\n")


@case
def plugin_systemexit(tmp):
    import sys

    from steth_hub.registry import Registry

    _plugin(tmp, "steth-exits", "steth_exits_plugin", "raise SystemExit(3)\n")
    sys.path.insert(0, str(tmp))
    try:
        reg = Registry()
        failed = [p for p in reg.failures if p.name == "steth_exits_plugin"]
        return f"isolated: {failed[0].error}; {len(reg.names('classifier'))} classifiers still listed"
    finally:
        sys.path.remove(str(tmp))


# --------------------------------------------------------------------------- the matrix
def read_rows() -> list[list[str]]:
    rows = []
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 5 and cells[0] not in ("id", "---") and not set(cells[0]) <= {"-"}:
            rows.append(cells)
    return rows


def test_every_row_has_a_case_and_every_case_a_row():
    ids = [row[0].strip("`") for row in read_rows()]
    assert len(ids) == len(set(ids)), "duplicate ids in docs/bad-inputs.md"
    assert set(ids) == set(CASES), (sorted(set(ids) - set(CASES)), sorted(set(CASES) - set(ids)))


def test_the_observed_column_is_what_the_code_does_now(tmp_path):
    observed = {}
    for name, fn in CASES.items():
        folder = tmp_path / name
        folder.mkdir()
        observed[name] = fn(folder).replace(str(folder), "TMP")
    if os.environ.get("STETH_UPDATE_BAD_INPUTS"):
        lines = []
        for line in DOC.read_text().splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if line.startswith("| ") and len(cells) == 5 and cells[0].strip("`") in observed:
                cells[3] = "`" + observed[cells[0].strip("`")].replace("`", "'") + "`"
                line = "| " + " | ".join(cells) + " |"
            lines.append(line)
        DOC.write_text("\n".join(lines) + "\n")
    mismatched = {row[0]: (row[3], observed[row[0].strip("`")]) for row in read_rows()
                  if row[3].strip("`") != observed[row[0].strip("`")].replace("`", "'")}
    assert not mismatched, "docs/bad-inputs.md is out of date (STETH_UPDATE_BAD_INPUTS=1 rewrites it):\n" + \
        "\n".join(f"{k}: doc {a!r} != now {b!r}" for k, (a, b) in mismatched.items())
