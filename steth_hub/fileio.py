"""Atomic writes (a file or folder appears whole or not at all), and reading config files.

Everything steth-hub writes (corpora, reports, model folders, pictures) goes through
these helpers, so an interrupted run never leaves a half-written result, and what was
there before stays intact until the new version is complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary sibling and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write JSON (indented, sorted keys kept as given) atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Build a folder in a temporary sibling; on success it replaces ``path`` in one step.

    On an exception (or an interrupt) the temporary folder is removed and ``path`` is left
    exactly as it was. With ``overwrite=False`` an existing ``path`` is an error.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True or choose another folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_partials(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    owner = tmp / PARTIAL_OWNER
    try:
        owner.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
        yield tmp
        owner.unlink(missing_ok=True)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the folder normal permissions
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / "previous")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


#: inside a ``.NAME.*.partial`` folder while it is being built: which process builds it
PARTIAL_OWNER = ".steth-partial-owner"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def stale_partials(path: str | os.PathLike) -> tuple[list[Path], list[Path]]:
    """Leftovers of killed writes of ``path``: (``.NAME.*.partial`` folders whose writer is gone,
    ``.NAME.*.old`` folders that may hold the previous version)."""
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        return [], []
    stale, old = [], []
    host = socket.gethostname()
    for item in sorted(parent.glob(f".{path.name}.*.partial")):
        if not item.is_dir():
            continue
        try:
            owner = json.loads((item / PARTIAL_OWNER).read_text())
            gone = owner.get("host") == host and not _alive(int(owner["pid"]))
        except (OSError, ValueError, KeyError, TypeError):
            gone = True  # no owner record (a writer killed before writing it, or an older steth-hub)
        if gone:
            stale.append(item)
    old = sorted(p for p in parent.glob(f".{path.name}.*.old") if p.is_dir())
    return stale, old


def clean_stale_partials(path: str | os.PathLike, *, quiet: bool = False) -> list[Path]:
    """Remove the half-written ``.NAME.*.partial`` folders a killed run left beside ``path`` (and say so);
    ``.NAME.*.old`` folders are reported, not removed (they may hold the previous version)."""
    stale, old = stale_partials(path)
    for item in stale:
        shutil.rmtree(item, ignore_errors=True)
        if not quiet:
            print(f"note: removed {item}, a half-written copy of {Path(path).name} left by an interrupted run",
                  file=sys.stderr)
    for item in old:
        if not quiet:
            where = item / "previous"
            print(f"warning: {item} is left from an interrupted replacement of {path}"
                  + (f"; the previous version is in {where}" if where.exists() else "")
                  + f" (remove it with: rm -rf '{item}')", file=sys.stderr)
    return stale


def check_output_folder(out: str | os.PathLike, inputs=(), *, markers=(), overwrite: bool = False,
                        what: str = "output", error=None) -> Path:
    """Refuse an ``--out`` that would destroy something; returns the resolved folder.

    * an output that is, or contains, one of ``inputs`` is always refused (writing it would replace them);
    * an existing file is refused;
    * an existing non-empty folder is replaced only when it holds one of ``markers`` (a previous
      output of the same kind: ``steth.json`` for a model...), or with ``overwrite=True``;
    * half-written ``.NAME.*.partial`` copies left by a killed run are removed (and said so).

    The one rule for every command that writes a folder (train, evaluate, preprocess, corpus import/merge).
    ``error`` is the :class:`~steth_hub.errors.StethError` subclass raised (default ConfigError).
    """
    from steth_hub.errors import ConfigError

    error = error or ConfigError
    out_path = Path(out).expanduser().resolve()
    for item in inputs:
        if item is None:
            continue
        item = Path(item).expanduser().resolve()
        if item == out_path or out_path in item.parents:
            raise error(f"the {what} folder {out_path} is, or contains, the input {item}; writing it would "
                        "replace the input", path=out, fix=f"write the {what} to a new folder outside the inputs")
    if out_path.exists():
        if not out_path.is_dir():
            raise error("exists and is not a folder", path=out, fix=f"choose a new folder for the {what}")
        entries = [p for p in out_path.iterdir()]
        if entries and not overwrite and not any((out_path / m).exists() for m in markers):
            kind = f"a steth-hub {what}" if markers else "empty"
            raise error(f"folder is not empty and is not {kind}; its {len(entries)} item(s) would be "
                        "replaced", path=out,
                        fix=f"choose a new or empty folder, or pass --overwrite to replace its contents")
    clean_stale_partials(out_path)  # half-written copies a killed run left beside it
    return out_path


def read_yaml_or_json(path: str | os.PathLike, *, what: str = "config") -> Any:
    """Parse a YAML (or ``.json``) file; a syntax error is a ConfigError naming the file."""
    from steth_hub.errors import ConfigError

    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        import yaml

        return yaml.safe_load(text)
    except Exception as exc:  # yaml.YAMLError, json.JSONDecodeError
        raise ConfigError(f"cannot parse {what}: {exc}", path=path, fix="fix the YAML/JSON syntax") from exc
