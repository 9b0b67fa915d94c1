"""Where a model is published: ``push_to_hub`` stages its safe files and a fresh card, then ONE Hub commit.

The model's safe files (:data:`steth_hub.model_folder.SAFE_PATTERNS`: JSON, safetensors, text, YAML, ONNX)
plus a freshly generated model card (``README.md``, see :mod:`steth_hub.card`) are staged in a
temporary folder and sent to the Hub in one commit, so a repo never holds weights without their
card. Nothing here imports huggingface_hub or torch at module level.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from steth_hub.errors import ModelError
from steth_hub.model_folder import SAFE_PATTERNS, STETH_METADATA, check_model_weights, publishable_metadata

if TYPE_CHECKING:
    from steth_hub.classifier import Classifier

log = logging.getLogger(__name__)


def push_to_hub(model_or_dir: "Classifier | str | os.PathLike", repo_id: str, *, token: str | bool | None = None,
                private: bool = False, revision: str | None = None, commit_message: str | None = None,
                endpoint: str | None = None, create_pr: bool = False,
                evaluation: dict | str | os.PathLike | None = None) -> str:
    """Publish a model to the Hub: weights, configs, ``steth.json`` and a generated card in ONE commit.

    Args:
        model_or_dir: a :class:`Classifier` (saved to a temporary folder first) or a model folder.
        repo_id: ``"org/name"``; the repo is created when missing.
        token: a Hub token with write access (default: the saved login).
        private: create the repo as private (ignored when it exists).
        revision: the branch to commit to (default ``main``; it must exist).
        commit_message: default ``"Upload <plugin> model with steth-hub <version>"``.
        endpoint: another Hub (a mirror, or a test server).
        create_pr: open a pull request instead of committing to the branch.
        evaluation: evaluation JSON (dict or path) for the card; default: ``evaluation.json`` in the
            folder, else ``steth.json``'s ``evaluation``.

    Returns:
        The commit URL (the pull request URL with ``create_pr``).
    """
    from steth_hub import __version__

    with contextlib.ExitStack() as stack:
        if hasattr(model_or_dir, "save_pretrained"):  # a loaded model: saved first
            saved = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="steth-save-"))) / "model"
            model_or_dir.save_pretrained(saved)
            source = saved
        else:
            source = Path(model_or_dir).expanduser()
        stage = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="steth-push-")))
        files, meta = stage_for_upload(source, stage, evaluation=evaluation, repo_id=repo_id)
        message = commit_message or f"Upload {meta.get('plugin')} model with steth-hub {__version__}"
        return _commit(stage, files, repo_id, token=token, private=private, revision=revision,
                       commit_message=message, endpoint=endpoint, create_pr=create_pr)


def stage_for_upload(source: Path, stage: Path, *, evaluation=None, repo_id: str | None = None
                     ) -> tuple[list[str], dict]:
    """Copy ``source``'s publishable files into ``stage`` with a stamped ``steth.json`` and a new card.

    Returns the relative paths to upload and the metadata. Pickle files anywhere are refused; files
    that match no safe pattern (scripts, optimizer states...) are left out with a warning.
    """
    from steth_hub.card import render_card
    from steth_hub.model_folder import read_metadata

    meta = read_metadata(source)  # a steth-hub model folder, with errors that say what is wrong
    check_model_weights(source)
    files: list[str] = []
    skipped: list[str] = []
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source).as_posix()
        if not path.is_file() or any(part.startswith(".") for part in Path(rel).parts):
            continue
        if rel in (STETH_METADATA, "README.md"):
            continue  # written below
        if any(fnmatch.fnmatch(path.name, pattern) for pattern in SAFE_PATTERNS):
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, stage / rel)
            files.append(rel)
        else:
            skipped.append(rel)
    if skipped:
        warnings.warn(f"not published (only {', '.join(SAFE_PATTERNS)} are): {', '.join(skipped)}",
                      UserWarning, stacklevel=3)
    meta = publishable_metadata(meta)
    (stage / STETH_METADATA).write_text(json.dumps(meta, indent=2, ensure_ascii=False, default=str) + "\n",
                                        encoding="utf-8")
    (stage / "README.md").write_text(render_card(stage, evaluation=_evaluation_for(source, evaluation),
                                                 name=meta.get("name") or (repo_id.split("/")[-1] if repo_id else None),
                                                 repo_id=repo_id),
                                     encoding="utf-8")
    return sorted(files + [STETH_METADATA, "README.md"]), meta


def _evaluation_for(source: Path, evaluation):
    if evaluation is not None:
        return evaluation
    candidate = source / "evaluation.json"
    return candidate if candidate.is_file() else None


def _commit(stage: Path, files: list[str], repo_id: str, *, token, private, revision, commit_message,
            endpoint, create_pr) -> str:
    from huggingface_hub import CommitOperationAdd, HfApi
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    api = HfApi(endpoint=endpoint, token=token)
    operations = [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(stage / rel)) for rel in files]
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.create_commit(repo_id, operations, commit_message=commit_message, revision=revision,
                                 create_pr=create_pr, repo_type="model")
    except OfflineModeIsEnabled as exc:
        raise ModelError(f"cannot push to {repo_id!r}: HF_HUB_OFFLINE is set",
                         fix="unset HF_HUB_OFFLINE (in a new process) to publish") from exc
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        fix = ("pass a token with write access (token= or `hf auth login`)" if status in (401, 403)
               else "check the repo id, the branch (revision must exist) and your permissions")
        raise ModelError(f"the Hub refused the upload to {repo_id!r}: {exc}", fix=fix) from exc
    except (OSError, httpx2.TransportError) as exc:  # connection refused, DNS, timeout
        raise ModelError(f"cannot reach the Hub to push {repo_id!r}: {exc}",
                         fix="check the network or the endpoint") from exc
    url = info.pr_url if create_pr and info.pr_url else info.commit_url
    log.info("pushed %d files to %s: %s", len(files), repo_id, url)
    return str(url)
