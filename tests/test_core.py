"""Importing steth_hub, `steth --help` and `steth plugins` stay light: no heavy library loads."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

HEAVY = ["torch", "transformers", "datasets", "diffusers", "gradio", "flwr", "timm", "sklearn", "librosa",
         "matplotlib", "pyarrow"]

PROBE = """
import json, sys
{body}
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def _heavy_after(body: str) -> list[str]:
    code = PROBE.format(body=body, heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_loads_no_heavy_library():
    assert _heavy_after("import steth_hub; steth_hub.__version__") == []


def test_help_and_plugins_load_no_heavy_library():
    body = """
from steth_hub.cli import main
for args in (["--help"], ["plugins"], ["plugins", "--json"]):
    try:
        main(args, standalone_mode=False)
    except SystemExit:
        pass
"""
    assert _heavy_after(body) == []


def test_every_subcommand_help_loads_no_heavy_library():
    body = """
from steth_hub.cli import main, LazyGroup
import click
for name in LazyGroup().list_commands(None):
    try:
        main([name, "--help"], standalone_mode=False)
    except SystemExit:
        pass
"""
    assert _heavy_after(body) == []


def test_version_and_help():
    from steth_hub import __version__
    from steth_hub.cli import main

    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0 and "plugins" in result.output and "not a diagnosis" in result.output


def test_lazy_public_api_names_resolve_to_modules():
    import steth_hub

    assert callable(steth_hub.decode) and callable(steth_hub.get_registry)
    try:
        steth_hub.no_such_name
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("unknown attribute did not raise")
