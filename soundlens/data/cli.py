"""`soundlens data ...` commands."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer

from soundlens.errors import SoundlensError

data_app = typer.Typer(help="Audio datasets and built-in concept generators.", no_args_is_help=True)


def _fail(err: Exception) -> None:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(code=2)


@data_app.command("list")
def list_cmd(
    domain: Optional[str] = typer.Option(None, help="Only 'music' or 'speech' concepts."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """List the concept generators with their task, target and label set."""
    from soundlens.data.concepts import list_concepts

    rows = []
    for c in list_concepts(domain):
        cfg = c.config_cls()
        rows.append({
            "concept": c.name, "domain": c.domain, "task": c.task, "target": c.target,
            "labels": c.label_set(cfg), "label_columns": c.label_columns(cfg), "description": c.description,
            "config_fields": c.config_cls.field_names(),
        })  # fmt: skip
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        labels = r["labels"]
        text = ", ".join(labels) if isinstance(labels, list) else labels
        if isinstance(labels, list) and len(labels) > 14:
            text = ", ".join(labels[:12]) + f", ... ({len(labels)} classes)"
        typer.echo(f"{r['concept']:<20} {r['domain']:<7} {r['task']:<15} {r['target']}: {text}")
        typer.echo(f"{'':<20} {r['description']}")


@data_app.command("make")
def make_cmd(
    concept: str = typer.Argument(..., help="Concept name (see `soundlens data list`)."),
    out: Path = typer.Option(..., "--out", help="Output folder (datasets.save_to_disk + README.md card)."),
    n: Optional[int] = typer.Option(None, "--n", help="Number of clips (default: the label grid once)."),
    seed: int = typer.Option(0, "--seed", help="Random seed: same seed, same dataset."),
    sample_rate: Optional[int] = typer.Option(None, "--sample-rate", help="Hz (default 22050 music, 16000 speech)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Render processes (default min(4, CPUs))."),
    set_: list[str] = typer.Option([], "--set", help="Generator parameter KEY=VALUE (repeatable; lists: a,b,c)."),
) -> None:
    """Render a concept dataset and write it to disk with a dataset card."""
    from soundlens.data.concepts import get_concept, make_dataset, save_dataset

    try:
        c = get_concept(concept)
        values = {}
        for item in set_:
            if "=" not in item:
                raise SoundlensError(f"--set expects KEY=VALUE, got {item!r}")
            key, value = item.split("=", 1)
            values[key.strip()] = value
        if sample_rate is not None:
            values["sample_rate"] = sample_rate
        cfg = c.config(values)
        t0 = time.perf_counter()
        ds = make_dataset(concept, n=n, seed=seed, config=cfg, workers=workers, progress=True)
        save_dataset(ds, out, concept, cfg, seed)
        dt = time.perf_counter() - t0
    except SoundlensError as err:
        _fail(err)
        return
    typer.echo(f"wrote {len(ds)} clips of '{concept}' to {out} in {dt:.1f} s (card: {out / 'README.md'})")
