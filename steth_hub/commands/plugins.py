"""``steth plugins``: list installed plugins with their kind, distribution and status."""

from __future__ import annotations

import difflib
import json

import click

from steth_hub.specs import KINDS


def _check_kind(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Refuse a kind that is not one of KINDS, naming the known ones and the closest."""
    if value is None or value in KINDS:
        return value
    close = difflib.get_close_matches(value.lower(), list(KINDS), n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise click.BadParameter(f"unknown plugin kind {value!r}.{hint} Known kinds: {', '.join(KINDS)}.",
                             ctx=ctx, param=param)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--kind", default=None, metavar="KIND", callback=_check_kind,
              help=f"Only this kind: {', '.join(KINDS)}.")
def plugins(as_json: bool, kind: str | None) -> None:
    """List installed plugins: kind, name, distribution, status (ok / failed with the reason)."""
    from steth_hub.registry import get_registry

    rows = get_registry().rows()
    if kind:
        rows = [r for r in rows if r["kind"] in (kind, "-")]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    headers = ("kind", "name", "distribution", "status")
    widths = [max([len(h)] + [len(str(r[h])) for r in rows]) for h in headers[:-1]]
    line = "  ".join(h.upper().ljust(w) for h, w in zip(headers[:-1], widths)) + "  STATUS"
    click.echo(line)
    for r in rows:
        cells = "  ".join(str(r[h]).ljust(w) for h, w in zip(headers[:-1], widths))
        status = r["status"]
        click.echo(cells + "  " + (click.style(status, fg="red") if status != "ok" else status))
    failed = sum(1 for r in rows if r["status"].startswith("failed"))
    if failed:
        click.echo(f"\n{failed} plugin(s) failed to load; the others work. "
                   "Set STETH_HUB_STRICT_PLUGINS=1 to make this an error.", err=True)
