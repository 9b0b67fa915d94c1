"""Where a model is found by name: ``from_pretrained`` and ``resolve`` (publishing: :mod:`steth_hub.publish`).

A model is named by a folder or by a Hugging Face Hub repo id:

* an existing folder is used as it is;
* ``"steth/efficientat-asthma"`` (the default), ``"steth/efficientat-asthma-floor"`` (the same with
  a common noise floor: more robust) and ``"steth/ast-asthma"`` with no revision are the models
  embedded in the package (``steth_hub/models/<name>``), so they work with no network and an
  empty cache;
* anything else is a Hub repo id, resolved through the Hugging Face cache with
  :func:`huggingface_hub.snapshot_download`. ``HF_HUB_OFFLINE``, ``revision``, ``cache_dir`` and
  ``token`` are respected; offline, a repo resolves from the cache or fails with an error that says
  how to get it. Only safe files are fetched (JSON, safetensors, text, YAML): pickle weights are never
  downloaded, and a repo whose only weights are pickle files is refused.

The folder then loads through :func:`steth_hub.model_folder.load_classifier`: ``steth.json`` names the
classifier plugin and the registry finds its class (never an import path taken from a file). A plain
transformers Audio Spectrogram Transformer checkpoint without ``steth.json`` (anyone's fine-tuned AST
with the labels ``not_asthma``/``asthma``) is *adopted* by the plugin that declares its ``model_type`` (the built-in ``ast``), with threshold 0.5 and
steth-hub's default preprocessing preset, with a warning, because nothing says how it was trained.

Nothing here imports huggingface_hub, transformers or torch at module level.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from steth_hub.errors import ModelError
from steth_hub.model_folder import (
    CODE_PATTERNS, PICKLE_SUFFIXES, SAFE_PATTERNS, STETH_METADATA, check_model_weights,
)
# publishing lives in steth_hub.publish; kept importable from here (steth_hub.push_to_hub, hub.push_to_hub)
from steth_hub.publish import push_to_hub  # noqa: F401

if TYPE_CHECKING:
    from steth_hub.classifier import Classifier

log = logging.getLogger(__name__)

#: the default model's name; with no revision it is the embedded folder below
DEFAULT_MODEL = "steth/efficientat-asthma"
_MODELS_DIR = Path(__file__).resolve().parent / "models"
#: names answered by a folder shipped inside the package (no network, no cache)
EMBEDDED: dict[str, Path] = {DEFAULT_MODEL: _MODELS_DIR / "efficientat-asthma",
                              "steth/efficientat-asthma-floor": _MODELS_DIR / "efficientat-asthma-floor",
                              "steth/ast-asthma": _MODELS_DIR / "ast-asthma",
                              "steth/vlm-asthma": _MODELS_DIR / "vlm-asthma"}
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


# --------------------------------------------------------------------------- loading
def from_pretrained(name_or_path: str | os.PathLike, revision: str | None = None, *,
                    cache_dir: str | os.PathLike | None = None, token: str | bool | None = None,
                    local_files_only: bool | None = None, endpoint: str | None = None,
                    trust_remote_code: bool = False) -> "Classifier":
    """Load a classifier from a folder, the embedded default or a Hub repo id.

    Args:
        name_or_path: a model folder, an embedded model (``"steth/efficientat-asthma"``, the default, or
            ``"steth/ast-asthma"``) or a Hub repo id.
        revision: a branch, tag or commit of the Hub repo. Any revision (even ``"main"``) sends
            an embedded name to the Hub instead of the embedded copy.
        cache_dir: the Hugging Face cache to use (default: ``HF_HUB_CACHE``).
        token: a Hub token for private repos (default: the saved login).
        local_files_only: only look in the cache; ``None`` follows ``HF_HUB_OFFLINE``.
        endpoint: another Hub (a mirror, or a test server).
        trust_remote_code: allow a checkpoint that ships its own code (``auto_map`` in
            ``config.json``). Only together with a pinned 40-hex commit ``revision`` for a Hub repo.
            steth-hub itself still builds the model from the installed plugin named in
            ``steth.json``; the code files are fetched so that transformers users of the same
            cached folder get the pinned code.

    Returns:
        The loaded :class:`~steth_hub.classifier.Classifier`, with its threshold and preset.

    Raises:
        ModelError: the model cannot be found, is not in the cache while offline, holds pickle
            weights, needs a plugin that is not installed (the error names the distribution), or
            asks for remote code without the opt-in.
    """
    from steth_hub.model_folder import load_classifier

    folder = resolve(name_or_path, revision, cache_dir=cache_dir, token=token,
                     local_files_only=local_files_only, endpoint=endpoint,
                     trust_remote_code=trust_remote_code)
    _check_remote_code(folder, trust_remote_code)
    if (folder / STETH_METADATA).is_file():
        return load_classifier(folder)
    with _adopted_folder(folder) as overlay:
        return load_classifier(overlay)


def resolve(name_or_path: str | os.PathLike, revision: str | None = None, *,
            cache_dir: str | os.PathLike | None = None, token: str | bool | None = None,
            local_files_only: bool | None = None, endpoint: str | None = None,
            trust_remote_code: bool = False) -> Path:
    """The local folder that holds the model ``name_or_path`` names (see :func:`from_pretrained`).

    Nothing is loaded: this finds (and, when allowed, downloads) the files and checks that the
    weights are safetensors.
    """
    local = _local_folder(name_or_path)
    if local is not None:
        if trust_remote_code:
            log.info("trust_remote_code=True for the local folder %s: its code is already on disk", local)
        _check_weights(local)
        return local
    name = os.fspath(name_or_path)
    if trust_remote_code and not (revision and _COMMIT_RE.match(revision)):
        raise ModelError(
            f"trust_remote_code=True for Hub repo {name!r} needs a pinned revision",
            fix="pass revision=<the 40-hex commit whose code you reviewed>; a branch or tag can change under you",
        )
    if name in EMBEDDED and revision is None:
        folder = EMBEDDED[name]
        if not (folder / STETH_METADATA).is_file():
            raise ModelError(
                f"the embedded model {name!r} is missing from this installation", path=folder,
                fix=f"reinstall steth-hub (the wheel ships steth_hub/models/{folder.name}), or pass a model folder, "
                    "or a revision to fetch it from the Hub",
            )
        _check_weights(folder)
        return folder
    if cache_dir is None and os.environ.get("HF_HUB_CACHE"):
        # huggingface_hub reads HF_HUB_CACHE once, at import; honour the value set now
        cache_dir = os.path.expanduser(os.path.expandvars(os.environ["HF_HUB_CACHE"]))
    folder = _snapshot(name, revision, cache_dir=cache_dir, token=token, local_files_only=local_files_only,
                       endpoint=endpoint, with_code=trust_remote_code)
    _check_weights(folder, repo_id=name, revision=revision, cache_dir=cache_dir)
    return folder


def _local_folder(name_or_path: str | os.PathLike) -> Path | None:
    """The folder ``name_or_path`` points to, ``None`` for a Hub repo id; errors for a bad path."""
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        # look at the top level only: a model folder holds its files there (--model / must not walk the disk)
        top = {p.name for p in path.iterdir()} if os.access(path, os.R_OK | os.X_OK) else set()
        if not ({STETH_METADATA, "config.json"} & top or any(n.endswith(".safetensors") for n in top)):
            raise ModelError("not a model folder: no steth.json, config.json or .safetensors file in it", path=path,
                             fix="pass the folder that holds steth.json and the weights (not a parent folder)")
        return path.resolve()
    if path.exists():
        raise ModelError("a model is a folder, not a file", path=path,
                         fix="pass the folder that holds steth.json and the .safetensors weights")
    looks_like_path = (isinstance(name_or_path, os.PathLike) or text.startswith((".", "/", "~", "\\"))
                       or text.count("/") > 1 or "\\" in text or re.match(r"^[A-Za-z]:", text))
    if looks_like_path:
        raise ModelError("model folder not found", path=path,
                         fix="check the path, or pass a Hub repo id such as 'steth/ast-asthma'")
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError as exc:
        raise ModelError(f"{text!r} is neither a model folder nor a valid Hub repo id ({exc})",
                         fix="pass an existing folder, or a repo id like 'org/name'") from exc
    return None


def _snapshot(repo_id: str, revision: str | None, *, cache_dir, token, local_files_only, endpoint,
              with_code: bool) -> Path:
    """Download (or find in the cache) the safe files of a Hub repo; errors say how to get it."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        IncompleteSnapshotError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = constants.is_offline_mode() if local_files_only is None else bool(local_files_only)
    patterns = list(SAFE_PATTERNS) + (list(CODE_PATTERNS) if with_code else [])
    where = f"{repo_id}" + (f"@{revision}" if revision else "")
    cache = os.fspath(cache_dir) if cache_dir is not None else constants.HF_HUB_CACHE
    try:
        folder = snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, token=token,
                                   local_files_only=offline, endpoint=endpoint, allow_patterns=patterns)
    except IncompleteSnapshotError as exc:
        raise ModelError(f"the cached copy of {where} is incomplete ({exc})", path=cache,
                         fix="download it again with network access (unset HF_HUB_OFFLINE)") from exc
    except LocalEntryNotFoundError as exc:
        if offline:
            raise ModelError(
                f"model {where} is not in the Hugging Face cache and downloads are off "
                "(HF_HUB_OFFLINE=1 or local_files_only)", path=cache,
                fix=f"download it once with network access: unset HF_HUB_OFFLINE and run "
                    f"`hf download {repo_id}` (or steth_hub.from_pretrained({repo_id!r})); or pass cache_dir= "
                    "pointing at a cache that has it, or the path of a model folder",
            ) from exc
        raise ModelError(f"cannot reach the Hub to fetch {where}, and it is not in the cache ({exc})",
                         path=cache, fix="check the network (or HF_ENDPOINT), or pass a model folder") from exc
    except GatedRepoError as exc:
        raise ModelError(f"Hub repo {repo_id!r} is gated", fix="accept its terms on the Hub and pass token=") from exc
    except RepositoryNotFoundError as exc:
        raise ModelError(f"Hub repo {repo_id!r} was not found (or it is private)",
                         fix="check the name; for a private repo pass token= or log in with `hf auth login`") from exc
    except RevisionNotFoundError as exc:
        raise ModelError(f"Hub repo {repo_id!r} has no revision {revision!r}",
                         fix="pass an existing branch, tag or commit") from exc
    except HfHubHTTPError as exc:
        raise ModelError(f"the Hub refused the download of {where}: {exc}",
                         fix="check token and permissions, or try again later") from exc
    return Path(folder)


def _check_weights(folder: Path, *, repo_id: str | None = None, revision: str | None = None,
                   cache_dir=None) -> None:
    """Refuse pickle weights; a folder (or repo) without any safetensors weights is an error too."""
    if repo_id is not None and not any(folder.rglob("*.safetensors")):
        pickles = [f for f in _cached_repo_files(repo_id, revision, cache_dir)
                   if Path(f).suffix.lower() in PICKLE_SUFFIXES]
        if pickles:
            raise ModelError(
                f"Hub repo {repo_id!r} has only pickle weights ({', '.join(sorted(pickles))}), which steth-hub refuses "
                "to load: pickle can run arbitrary code", path=folder,
                fix="ask the author to publish model.safetensors, or convert a trusted copy yourself",
            )
    check_model_weights(folder)


def _cached_repo_files(repo_id: str, revision: str | None, cache_dir) -> list[str]:
    """The repo's file names as recorded by the last snapshot_download (no network); [] if unknown."""
    from huggingface_hub import get_cached_repo_tree
    from huggingface_hub.errors import CachedRepoTreeNotFoundError

    try:
        return [f.path for f in get_cached_repo_tree(repo_id, revision=revision, cache_dir=cache_dir)]
    except (CachedRepoTreeNotFoundError, OSError, ValueError):
        return []


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path.name} is not valid JSON ({exc})", path=path, fix="re-save the model") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path.name} is not a JSON object", path=path, fix="re-save the model")
    return data


def _check_remote_code(folder: Path, trust_remote_code: bool) -> None:
    """A checkpoint that declares its own code (``auto_map``) needs the explicit opt-in."""
    config = folder / "config.json"
    if not config.is_file() or trust_remote_code:
        return
    auto_map = _read_json(config).get("auto_map")
    if auto_map:
        raise ModelError(
            "this checkpoint declares its own model code (auto_map in config.json); steth-hub does not run "
            "code from a checkpoint unless asked", path=config,
            fix="review the code, then pass trust_remote_code=True with revision=<that 40-hex commit>",
        )


@contextlib.contextmanager
def _adopted_folder(folder: Path) -> Iterator[Path]:
    """A plain transformers AST checkpoint seen through a temporary folder that adds ``steth.json``.

    The checkpoint's files are linked (or copied where links are not allowed), never modified.
    """
    meta = adoption_metadata(folder)
    warnings.warn(
        f"{folder} has no steth.json: adopting it as a plain {meta['plugin']!r} checkpoint with threshold "
        f"{meta['threshold']} and steth-hub's default preprocessing preset {meta['preset'].get('name')!r}; its "
        "screening behaviour is not the one it was trained with unless those match. Save it with steth-hub "
        "to record them.",
        UserWarning, stacklevel=3,
    )
    tmp = Path(tempfile.mkdtemp(prefix="steth-adopt-"))
    try:
        for item in folder.iterdir():
            if item.is_file():
                try:
                    os.symlink(item.resolve(), tmp / item.name)
                except OSError:
                    shutil.copy2(item, tmp / item.name)
        (tmp / STETH_METADATA).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def adopting_plugins() -> dict[str, str]:
    """``{transformers model_type: classifier plugin}`` for plain checkpoints without ``steth.json``.

    A classifier plugin declares the checkpoints it can adopt in its spec,
    ``options={"adopts": ["<model_type>", ...]}`` (the built-in ``ast`` plugin adopts
    ``"audio-spectrogram-transformer"``); nothing here names a plugin. Two plugins claiming the
    same model type: the first registered (built-ins first) keeps it.
    """
    from steth_hub.registry import get_registry

    out: dict[str, str] = {}
    for reg in get_registry().registrations("classifier"):
        for model_type in (reg.spec.options or {}).get("adopts", ()) or ():
            out.setdefault(str(model_type), reg.spec.name)
    return out


def adoption_metadata(folder: str | os.PathLike) -> dict:
    """The ``steth.json`` given to a plain transformers AST checkpoint (see the module docstring).

    Refuses anything that is not a two-label AST audio classifier whose label 1 is ``asthma``:
    guessing which output means asthma would make every decision meaningless.
    """
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelError("not a steth-hub model: no steth.json and no config.json", path=folder,
                         fix="pass a folder written by save_pretrained")
    config = _read_json(config_path)
    if config.get("plugin") or config.get("steth_plugin"):
        raise ModelError(f"the model folder has no {STETH_METADATA}", path=folder,
                         fix="re-save the model with steth-hub's save_pretrained")
    model_type = config.get("model_type")
    adopters = adopting_plugins()
    if model_type not in adopters:
        known = ", ".join(repr(t) for t in sorted(adopters)) or "none (no installed classifier adopts checkpoints)"
        raise ModelError(
            f"not a steth-hub model: no {STETH_METADATA}, and config.json is model_type {model_type!r}; only plain "
            f"checkpoints of these types are adopted: {known}", path=folder,
            fix="save the model with steth-hub's save_pretrained, which writes steth.json",
        )
    labels = {int(k): str(v).strip().lower() for k, v in (config.get("id2label") or {}).items()}
    if len(labels) != 2 or labels.get(1) != "asthma":
        raise ModelError(
            f"cannot tell which output is asthma: id2label is {config.get('id2label')!r}", path=config_path,
            fix='set id2label to {"0": "not_asthma", "1": "asthma"} (and label2id) before loading',
        )
    sample_rate = 16000
    pre = folder / "preprocessor_config.json"
    if pre.is_file():
        sample_rate = int(_read_json(pre).get("sampling_rate", sample_rate))
    from steth_hub.preprocess import load_preset

    return {"plugin": adopters[model_type], "threshold": 0.5, "sample_rate": sample_rate, "preset": load_preset(None).to_dict(),
            "labels": ["not_asthma", "asthma"], "adopted": True,
            "training": {"note": "plain transformers checkpoint adopted without steth.json: training unknown"}}


# --------------------------------------------------------------------------- metadata


# --------------------------------------------------------------------------- publishing


