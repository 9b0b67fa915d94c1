"""``steth card`` and ``steth push``: regenerate a model card, publish a model folder to the Hub.

Both work on a model folder written by ``save_pretrained`` (``steth.json`` + safetensors).
The Hub client and Jinja2 are imported only when a command runs.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--evaluation", "evaluation", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="evaluation.json from `steth evaluate` (default: MODEL_DIR/evaluation.json, "
                                 "else steth.json's evaluation; none: the card says 'not evaluated').")
@click.option("--compare", "compare", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Another run's evaluation.json for the patient-level comparison table (repeatable); "
                   "the card's own evaluation comes first.")
@click.option("--name", default=None, help="The model's name on the card (default: steth.json name or the folder name).")
@click.option("--repo-id", default=None, help="The Hub repo id shown in the usage examples.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the card here instead of MODEL_DIR/README.md.")
@click.option("--copy-to", type=click.Path(path_type=Path), default=None,
              help="Also write the card here (a folder such as model_cards/ gets <name>.md).")
def card(model_dir: Path, evaluation: Path | None, compare: tuple[Path, ...], name: str | None,
         repo_id: str | None, out: Path | None, copy_to: Path | None) -> None:
    """Regenerate MODEL_DIR's model card (README.md) from steth.json and its evaluation report."""
    from steth_hub.card import write_card

    comparison = None
    if compare:
        own = evaluation or (model_dir / "evaluation.json")
        if own.is_file():
            first = [own]
        else:  # the evaluation steth.json carries (what steth train --evaluation stored) comes first
            import json

            try:
                recorded = json.loads((model_dir / "steth.json").read_text(encoding="utf-8")).get("evaluation")
            except (OSError, ValueError, AttributeError):
                recorded = None
            first = [recorded] if isinstance(recorded, dict) and recorded.get("model") else []
        comparison = first + list(compare)
    written = write_card(model_dir, evaluation, out=out, copy_to=copy_to, name=name,
                         comparison=comparison, repo_id=repo_id)
    click.echo(f"wrote {written}")
    if copy_to is not None:
        click.echo(f"copied to {copy_to}")


@click.command()
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("repo_id")
@click.option("--private", is_flag=True, help="Create the repo as private (ignored if it exists).")
@click.option("--token", default=None, envvar="HF_TOKEN", show_envvar=True,
              help="Hub token with write access (default: $HF_TOKEN or the saved login).")
@click.option("--endpoint", default=None, help="Another Hub endpoint (a mirror or a test server).")
@click.option("--revision", default=None, help="Branch to commit to (default main; it must exist).")
@click.option("--message", "commit_message", default=None, help="Commit message.")
@click.option("--create-pr", is_flag=True, help="Open a pull request instead of committing to the branch.")
@click.option("--evaluation", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="evaluation.json for the generated card (default: MODEL_DIR/evaluation.json).")
def push(model_dir: Path, repo_id: str, private: bool, token: str | None, endpoint: str | None,
         revision: str | None, commit_message: str | None, create_pr: bool, evaluation: Path | None) -> None:
    """Publish MODEL_DIR to the Hub as REPO_ID: weights, configs and a generated card in one commit."""
    from steth_hub.publish import push_to_hub

    url = push_to_hub(model_dir, repo_id, token=token, private=private, revision=revision,
                      commit_message=commit_message, endpoint=endpoint, create_pr=create_pr,
                      evaluation=evaluation)
    click.echo(url)
