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


@app.command("sites")
def sites_cmd(
    model: str = typer.Argument(..., help="Embedded name, local folder or hub id."),
    shapes: bool = typer.Option(True, help="Run one forward pass on 1 s of noise for shapes."),
    kind: str = typer.Option("", help="Only sites of this kind: layer, attn, head, mlp, module."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List a model's canonical sites, their module paths and activation shapes."""
    from soundlens.hooks.inspect import site_shapes
    from soundlens.models import load

    lm = load(model)
    sites = {n: s for n, s in lm.sites().items() if not kind or s.kind == kind}
    found = site_shapes(lm, list(sites)) if shapes else {}
    rows = [{"site": n, "kind": s.kind, "module": s.module_path,
             "shape": list(found[n]) if n in found else None} for n, s in sites.items()]
    if as_json:
        typer.echo(json.dumps({"model": lm.name, "family": lm.spec.name, "sites": rows}, indent=2))
        return
    typer.echo(f"{lm.name} ({lm.spec.name}, {lm.sample_rate} Hz): {len(rows)} sites")
    width = max(len(r["site"]) for r in rows) if rows else 10
    for r in rows:
        shape = "x".join(map(str, r["shape"])) if r["shape"] else "-"
        typer.echo(f"  {r['site']:<{width}}  {r['kind']:<6}  {shape:<14}  {r['module']}")


@app.command("probe")
def probe_cmd(
    model: str = typer.Argument(..., help="Embedded name, local folder or hub id."),
    dataset: str = typer.Argument(
        "", help="A dataset folder (save_to_disk), an audio folder with labels.csv, or a hub "
        "id. Omit it to probe built-in concept datasets."),
    label: str = typer.Option("", help="Label column to probe (with a dataset)."),
    out: str = typer.Option("runs/probe", help="Output folder."),
    concepts: str = typer.Option("notes,chords,voices",
                                 help="Built-in concepts when no dataset is given."),
    n: int = typer.Option(240, help="Clips per built-in concept."),
    sites: str = typer.Option("", help="Comma-separated sites (default: every encoder layer)."),
    pooling: str = typer.Option("mean", help="mean, max, meanstd or last."),
    groups: str = typer.Option("", help="Column whose values never straddle the split."),
    control_type: str = typer.Option("", help="Column defining types for the control task."),
    baseline: str = typer.Option(
        "auto", help="Non-neural baseline: chroma, mfcc, none, or auto (chroma for music "
        "models, MFCC otherwise; built-in concepts use their domain's)."),
    random_baseline: bool = typer.Option(True, help="Also probe the same model re-initialised."),
    trim: bool = typer.Option(False, help="Whisper: run the encoder on the clip instead of the "
                              "padded 30 s window (faster, approximate; stated in the report)."),
    batch_size: int = typer.Option(8, help="Clips per forward pass."),
    seed: int = typer.Option(0, help="Seed for data, splits and the random-weight control."),
    threads: int = typer.Option(0, help="torch threads (0: leave torch's default)."),
) -> None:
    """Find where a concept lives: probe every layer, with baselines, controls and a report."""
    import torch

    from soundlens.models import load
    from soundlens.probing.run import probe_concepts, probe_dataset

    if threads:
        torch.set_num_threads(threads)
    lm = load(model)
    common = dict(sites=[s for s in sites.split(",") if s] or None, pooling=pooling,
                  random_baseline=random_baseline, trim=trim, batch_size=batch_size, seed=seed,
                  groups=groups or None, control_type=control_type or None)
    if not dataset:
        summary = probe_concepts(lm, out, concepts=[c for c in concepts.split(",") if c], n=n,
                                 **common)
        for name, c in summary["concepts"].items():
            typer.echo(f"{name:14s} {c['label']:12s} best {c['best_site']:20s} "
                       f"{c['metric']} {c['best']:.3f} [{c['best_ci'][0]:.3f}, {c['best_ci'][1]:.3f}]")
        typer.echo(f"report: {out}/summary.json, {out}/layer_curves.png")
        return
    if not label:
        raise typer.BadParameter("pass --label COLUMN with a dataset")
    from soundlens.data.loading import open_dataset

    ds = open_dataset(dataset, lm.sample_rate)
    music = {"musicgen", "musicgen-melody", "encodec", "basic-pitch"}
    auto = "chroma" if lm.spec.name in music else "mfcc"
    feature = None if baseline == "none" else (auto if baseline == "auto" else baseline)
    s = probe_dataset(lm, ds, label, out, baseline=feature, **common)
    typer.echo(f"best site {s['best_site']}: {s['metric']} {s['best'][s['metric']]:.3f}")
    typer.echo(f"report: {out}/summary.json, {out}/layer_curve.png")


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
