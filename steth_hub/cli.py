"""The ``steth`` command line.

Each sub-command lives in its own module under ``steth_hub/commands/`` and is imported
only when it runs, so ``steth --help`` answers without importing any of them (or torch).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys

import click

from steth_hub import __version__
from steth_hub.errors import StethError

# name -> (module under steth_hub.commands, attribute, one-line help shown by --help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "plugins": ("plugins", "plugins", "List installed plugins: kind, name, distribution, status."),
    "corpus": ("corpus", "corpus", "Import a corpus of recordings and inspect it."),
    "preprocess": ("preprocess", "preprocess", "Cut a corpus into clean, normalised clips."),
    "features": ("features", "features", "Compute and cache spectrogram features for a corpus."),
    "train": ("train", "train", "Train a classifier on a corpus with a recipe."),
    "evaluate": ("evaluate", "evaluate", "Patient-grouped cross-validation with confidence intervals."),
    "screen": ("screen", "screen", "Screen recordings for asthma with a trained model."),
    "export": ("export", "export", "Export a model to ONNX for the light screening runtime (no torch)."),
    "explain": ("explain", "explain", "Draw where the model looked over the spectrogram."),
    "report": ("report", "report", "The clinician's report for a patient: PDF, HTML, JSON or FHIR R4."),
    "card": ("hub", "card", "Regenerate a model card from a model's evaluation."),
    "push": ("hub", "push", "Publish a model folder to the Hugging Face Hub."),
    "demo": ("demo", "demo", "Launch the Gradio demo locally."),
    "federated": ("federated", "federated", "Federated training with Flower: partition, run, clinic."),
    "generate": ("generate", "generate", "Synthetic breath sounds from a prompt or patient facts (WAV + JSON), optionally checked."),
    "convert": ("convert", "convert", "Convert a third-party PyTorch state dict (.pt) to safetensors, safely."),
}


def _available(module: str) -> bool:
    return importlib.util.find_spec(f"steth_hub.commands.{module}") is not None


class LazyGroup(click.Group):
    """A group whose sub-commands are imported only when invoked."""

    def list_commands(self, ctx):
        return sorted(name for name, (module, _, _) in COMMANDS.items() if _available(module))

    def get_command(self, ctx, name):
        if name not in COMMANDS or not _available(COMMANDS[name][0]):
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(f"steth_hub.commands.{module}"), attr)

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except StethError as exc:
            click.secho(f"error: {exc}", err=True, fg="red")
            sys.exit(2)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="steth-hub")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
def main(verbose: int) -> None:
    """steth-hub: machine learning on respiratory sounds, built first for asthma screening.

    Screening support for clinicians, not a diagnosis.
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":  # pragma: no cover
    main()
