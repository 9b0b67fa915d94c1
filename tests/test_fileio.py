"""Atomic writes: a result appears whole or not at all, and what was there survives a failure."""

from __future__ import annotations

import json

import pytest

from steth_hub.fileio import atomic_directory, atomic_write_json, atomic_write_text


def test_atomic_write_replaces_whole_files_and_leaves_no_temporaries(tmp_path):
    target = tmp_path / "sub" / "report.json"
    atomic_write_json(target, {"a": 1})
    atomic_write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in target.parent.iterdir()] == ["report.json"]


def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "note.txt"
    atomic_write_text(target, "old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("steth_hub.fileio.os.replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["note.txt"]


def test_atomic_directory_replaces_on_success(tmp_path):
    target = tmp_path / "corpus"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("1")
    with atomic_directory(target) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]


def test_atomic_directory_leaves_the_old_folder_on_interrupt(tmp_path):
    target = tmp_path / "corpus"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("kept")
    with pytest.raises(KeyboardInterrupt):
        with atomic_directory(target) as tmp:
            (tmp / "half.txt").write_text("half")
            raise KeyboardInterrupt
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]
    with pytest.raises(FileExistsError):
        with atomic_directory(target, overwrite=False):
            pass


def test_results_get_normal_permissions_not_the_temporaries_private_ones(tmp_path):
    import os
    import stat

    mask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_directory(tmp_path / "d") as tmp:
            (tmp / "f").write_text("y")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
