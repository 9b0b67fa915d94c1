"""The plugin registry: discovery through entry points and every failure mode."""

from __future__ import annotations

import inspect
import re
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from steth_hub import hookspecs
from steth_hub.errors import PluginConflictError, PluginError, UnknownPluginError
from steth_hub.registry import Registry
from steth_hub.specs import KINDS

REPO = Path(__file__).resolve().parents[1]

GOOD = """
from steth_hub import ClassifierSpec, PreprocessorSpec, hookimpl

@hookimpl
def register_classifiers(register):
    register(ClassifierSpec(name="{name}", summary="test classifier", factory="{module}:Model"))

@hookimpl
def register_preprocessors():   # fewer arguments than the hook declares is allowed
    pass

class Model:
    pass
"""


def make_dist(root: Path, dist: str, module: str, code: str, ep_name: str | None = None) -> None:
    """A real installed distribution on disk: a module plus a .dist-info with an entry point."""
    (root / f"{module}.py").write_text(textwrap.dedent(code))
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[steth_hub]\n{ep_name or module} = {module}\n")


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("STETH_HUB_STRICT_PLUGINS", raising=False)
    monkeypatch.delenv("STETH_HUB_PLUGINS", raising=False)
    return tmp_path


def test_builtin_plugins_are_found_through_entry_points(site):
    reg = Registry()
    builtin = {p.name: p for p in reg.plugins if p.distribution == "steth-hub"}
    assert {"builtin-preprocessors", "builtin-features", "builtin-classifiers", "builtin-explainers"} <= set(builtin)
    assert all(p.status == "ok" for p in builtin.values()), builtin


def test_a_contributors_plugin_is_registered(site):
    make_dist(site, "steth-good", "steth_good_plugin", GOOD.format(name="good-model", module="steth_good_plugin"))
    reg = Registry()
    spec = reg.get("classifier", "good-model")
    assert spec.summary == "test classifier"
    assert spec.load().__name__ == "Model"
    reg_row = [r for r in reg.rows() if r["name"] == "good-model"][0]
    assert reg_row["distribution"] == "steth-good" and reg_row["status"] == "ok"


def test_a_plugin_that_fails_to_import_is_reported_and_the_rest_work(site):
    make_dist(site, "steth-good", "steth_good_plugin", GOOD.format(name="good-model", module="steth_good_plugin"))
    make_dist(site, "steth-broken", "steth_broken_plugin", "import a_module_that_does_not_exist\n")
    reg = Registry()
    failed = {p.name: p for p in reg.failures}
    assert "steth_broken_plugin" in failed
    assert failed["steth_broken_plugin"].distribution == "steth-broken"
    assert "a_module_that_does_not_exist" in failed["steth_broken_plugin"].error
    assert reg.get("classifier", "good-model")  # the good one still works


def test_strict_mode_makes_a_broken_plugin_an_error(site, monkeypatch):
    make_dist(site, "steth-broken", "steth_broken_plugin", "raise RuntimeError('boom at import')\n")
    monkeypatch.setenv("STETH_HUB_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match=r"steth_broken_plugin.*steth-broken.*boom at import"):
        Registry().load()


def test_two_plugins_claiming_one_name_is_an_error_naming_both(site):
    make_dist(site, "steth-first", "steth_first_plugin", GOOD.format(name="dup", module="steth_first_plugin"))
    make_dist(site, "steth-second", "steth_second_plugin", GOOD.format(name="dup", module="steth_second_plugin"))
    reg = Registry()
    with pytest.raises(PluginConflictError) as err:
        reg.get("classifier", "dup")
    assert "steth-first" in str(err.value) and "steth-second" in str(err.value)
    statuses = [r["status"] for r in reg.rows() if r["name"] == "dup"]
    assert len(statuses) == 2 and all(s.startswith("conflict") for s in statuses)
    with pytest.raises(PluginConflictError):
        Registry(strict=True).load()


def test_a_misspelled_hook_is_an_error_not_silence(site):
    make_dist(site, "steth-typo", "steth_typo_plugin", """
        from steth_hub import ClassifierSpec, hookimpl

        @hookimpl
        def register_clasifiers(register):
            register(ClassifierSpec(name="typo", summary="s", factory="x:y"))
    """)
    reg = Registry()
    [failure] = [p for p in reg.failures if p.name == "steth_typo_plugin"]
    assert "register_clasifiers" in failure.error and "register_classifiers" in failure.error
    with pytest.raises(UnknownPluginError):
        reg.get("classifier", "typo")


def test_an_undecorated_hook_is_reported(site):
    make_dist(site, "steth-plain", "steth_plain_plugin", """
        from steth_hub import ClassifierSpec

        def register_classifiers(register):
            register(ClassifierSpec(name="plain", summary="s", factory="x:y"))
    """)
    [failure] = [p for p in Registry().failures if p.name == "steth_plain_plugin"]
    assert "not marked with @steth_hub.hookimpl" in failure.error


def test_a_hook_that_raises_or_registers_the_wrong_kind_fails_that_plugin_only(site):
    make_dist(site, "steth-raises", "steth_raises_plugin", """
        from steth_hub import hookimpl

        @hookimpl
        def register_explainers(register):
            raise ValueError("cannot register")
    """)
    make_dist(site, "steth-wrong", "steth_wrong_plugin", """
        from steth_hub import PreprocessorSpec, hookimpl

        @hookimpl
        def register_classifiers(register):
            register(PreprocessorSpec(name="wrong", summary="s", factory="x:y"))
    """)
    make_dist(site, "steth-good", "steth_good_plugin", GOOD.format(name="good-model", module="steth_good_plugin"))
    reg = Registry()
    reasons = {p.name: p.error for p in reg.failures}
    assert "cannot register" in reasons["steth_raises_plugin"]
    assert "PreprocessorSpec through the classifier hook" in reasons["steth_wrong_plugin"]
    assert "wrong" not in reg.names("preprocessor")
    assert reg.get("classifier", "good-model")


def test_asking_for_an_unknown_name_lists_the_known_ones(site):
    make_dist(site, "steth-good", "steth_good_plugin", GOOD.format(name="good-model", module="steth_good_plugin"))
    with pytest.raises(UnknownPluginError) as err:
        Registry().get("classifier", "good-modle")
    assert "good-model" in str(err.value) and "did you mean" in str(err.value)
    with pytest.raises(UnknownPluginError, match="kinds: preprocessor"):
        Registry().get("vocoder", "x")


def test_only_the_plugins_named_in_the_environment_load(site, monkeypatch):
    make_dist(site, "steth-good", "steth_good_plugin", GOOD.format(name="good-model", module="steth_good_plugin"))
    make_dist(site, "steth-broken", "steth_broken_plugin", "import nowhere_to_be_found\n")
    monkeypatch.setenv("STETH_HUB_PLUGINS", "steth-good")
    reg = Registry()
    assert [p.distribution for p in reg.plugins] == ["steth-good"]
    assert reg.failures == []


def test_missing_requirements_name_the_extra_to_install(site):
    make_dist(site, "steth-needy", "steth_needy_plugin", """
        from steth_hub import ClassifierSpec, hookimpl

        @hookimpl
        def register_classifiers(register):
            register(ClassifierSpec(name="needy", summary="s", factory="steth_needy_plugin:X",
                                    requires=("a_package_nobody_has",), extra="train"))
    """)
    reg = Registry()
    [row] = [r for r in reg.rows() if r["name"] == "needy"]
    assert row["status"].startswith("needs a_package_nobody_has")
    with pytest.raises(PluginError, match=r"pip install 'steth-hub\[train\]'"):
        reg.get("classifier", "needy").load()


def test_steth_plugins_cli_shows_kind_name_distribution_and_failures(site):
    from steth_hub.cli import main

    make_dist(site, "steth-good", "steth_good_plugin", GOOD.format(name="good-model", module="steth_good_plugin"))
    make_dist(site, "steth-broken", "steth_broken_plugin", "raise ImportError('missing native library')\n")
    result = CliRunner().invoke(main, ["plugins"])
    assert result.exit_code == 0, result.output
    assert re.search(r"classifier\s+good-model\s+steth-good\s+ok", result.output)
    assert re.search(r"steth_broken_plugin\s+steth-broken\s+failed: import failed: .*missing native library",
                     result.output)
    assert "1 plugin(s) failed to load" in result.output


def test_every_hook_has_a_docstring_and_a_documented_section():
    doc = (REPO / "docs" / "plugins.md").read_text()
    for hook_name in KINDS.values():
        hook = getattr(hookspecs, hook_name)
        assert inspect.getdoc(hook) and "register(" in inspect.getdoc(hook), f"{hook_name} lacks a docstring"
        assert f"### {hook_name}" in doc, f"docs/plugins.md has no section for {hook_name}"
    documented = set(re.findall(r"^### (register_\w+)", doc, flags=re.M))
    assert documented == set(KINDS.values()), "docs/plugins.md documents a hook that does not exist"


def test_spec_validation_gives_actionable_errors():
    from steth_hub.specs import ClassifierSpec

    with pytest.raises(PluginError, match="module:attribute"):
        ClassifierSpec(name="x", summary="s", factory="no_colon_here")
    with pytest.raises(PluginError, match="invalid classifier name"):
        ClassifierSpec(name="has space", summary="s", factory="a:b")
    assert ClassifierSpec(name="x", summary="s", factory="a:b", requires="torch").requires == ("torch",)


# --------------------------------------------------------------------------- issue 13: hardening
@pytest.mark.parametrize("raiser", ["raise SystemExit(3)", "raise GeneratorExit()",
                                    "class Odd(BaseException):\n    pass\nraise Odd('odd')"])
def test_a_plugin_raising_a_baseexception_at_import_is_isolated(site, raiser):
    make_dist(site, "steth-good", "steth_good_plugin", GOOD.format(name="good-model", module="steth_good_plugin"))
    make_dist(site, "steth-exits", "steth_exits_plugin", raiser + "\n")
    reg = Registry()
    failed = {p.name: p for p in reg.failures}
    assert "steth_exits_plugin" in failed and "import failed" in failed["steth_exits_plugin"].error
    assert reg.get("classifier", "good-model")


def test_a_plugin_raising_systemexit_while_registering_is_isolated(site):
    code = ("from steth_hub import hookimpl\n\n@hookimpl\ndef register_classifiers(register):\n"
            "    raise SystemExit('bye')\n")
    make_dist(site, "steth-exits", "steth_exits_reg", code)
    reg = Registry()
    assert "steth_exits_reg" in {p.name for p in reg.failures}


def test_a_real_keyboard_interrupt_still_stops_loading(site):
    make_dist(site, "steth-ctrlc", "steth_ctrlc_plugin", "raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        Registry().load()


def test_a_broken_builtin_plugin_is_reported_loudly_as_an_installation_bug(site, capsys):
    make_dist(site, "steth-hub", "steth_fake_builtin", "import a_module_that_does_not_exist\n")
    reg = Registry(only=["steth_fake_builtin"])
    assert [p.name for p in reg.failures] == ["steth_fake_builtin"]
    err = capsys.readouterr().err
    assert "installation bug" in err and "steth_fake_builtin" in err and "Reinstall steth-hub" in err


def test_a_third_party_failure_is_not_called_an_installation_bug(site, capsys):
    make_dist(site, "steth-broken", "steth_broken_plugin", "import a_module_that_does_not_exist\n")
    Registry(only=["steth-broken"]).load()
    assert "installation bug" not in capsys.readouterr().err


def test_a_factory_module_raising_systemexit_is_a_plugin_error(site):
    (site / "steth_exit_factory.py").write_text("raise SystemExit(2)\n")
    from steth_hub.specs import ClassifierSpec

    with pytest.raises(PluginError, match="SystemExit"):
        ClassifierSpec(name="x", summary="x", factory="steth_exit_factory:Model").load()
