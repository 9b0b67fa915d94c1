"""tests/conftest.py marks every test that needs the shared recordings (issue 13)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_shared_data_marker_is_added_for_direct_and_indirect_use(tmp_path):
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "conftest.py").write_text((REPO / "tests" / "conftest.py").read_text())
    (tests / "test_probe.py").write_text(textwrap.dedent("""
        import pytest

        @pytest.fixture
        def corpus_from_shared(shared_data):
            return shared_data

        def test_direct(shared_data):
            pass

        def test_indirect(corpus_from_shared):
            pass

        def test_plain():
            pass
    """))
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    shared_data: needs the shared data\n    slow: slow\n")
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "--collect-only", "-m", "shared_data", "-p",
                          "no:cacheprovider", str(tests)], cwd=tmp_path, capture_output=True, text=True)
    assert "test_direct" in out.stdout and "test_indirect" in out.stdout, out.stdout + out.stderr
    assert "test_plain" not in out.stdout
