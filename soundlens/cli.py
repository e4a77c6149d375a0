"""The `soundlens` command."""

from __future__ import annotations

import json

import typer

from soundlens.data.cli import data_app

app = typer.Typer(
    help="Look inside speech and music foundation models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(data_app, name="data")


@app.command("models")
def models_cmd(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the embedded models (real weights shipped in registry packages) and the families."""
    from soundlens.models.embedded import EMBEDDED
    from soundlens.models.families import FAMILIES

    rows = [
        {
            "name": m.name,
            "family": m.family,
            "sample_rate": m.sample_rate,
            "licence": m.licence,
            "package": " + ".join(m.packages),
            "installed": m.installed(),
            "description": m.description,
        }
        for m in EMBEDDED.values()
    ]
    if as_json:
        typer.echo(json.dumps({"embedded": rows, "families": sorted(FAMILIES)}, indent=2))
        return
    cols = ["name", "family", "sample_rate", "licence", "package", "installed"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    typer.echo("  ".join(c.upper().ljust(widths[c]) for c in cols))
    for r in rows:
        typer.echo("  ".join(str(r[c]).ljust(widths[c]) for c in cols))
    typer.echo("")
    typer.echo("Families loadable from the hub or a local folder (soundlens.models.load):")
    for name, spec in FAMILIES.items():
        typer.echo(f"  {name:16s} {spec.description}")


def main() -> None:
    """Entry point that turns soundlens' own errors into one clear line, not a traceback."""
    from soundlens.errors import SoundlensError

    try:
        app()
    except SoundlensError as e:
        typer.secho(f"error: {e}", err=True, fg="red")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
