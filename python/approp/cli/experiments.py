"""Commands over many runs: reproduce a preset, compare presets, sweep, trade-off fronts, validate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..config import ConfigError, parse_set
from .common import SET_GRID, SET_HELP, SET_VAR, app, user_errors


@app.command()
@user_errors
def reproduce(
    preset: Annotated[str, typer.Option(help="quick | thesis, or a preset .toml file")],
    out: Annotated[Path | None, typer.Option(help="output directory (default: runs/PRESET)")] = None,
    jobs: Annotated[int, typer.Option(help="cells run at once (one per GPU where several exist)")] = 1,
    only: Annotated[str | None, typer.Option(help="glob over cell names, e.g. 'eps0.001-*'")] = None,
    data_dir: Annotated[Path | None, typer.Option(envvar="APPROP_DATA")] = None,
    device: Annotated[str | None, typer.Option(help="override the preset's device (cpu | cuda)")] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set", metavar=SET_VAR, help=SET_HELP + " (not train.eps, the grid's axis)" + SET_GRID.format("cell")
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option(help="no progress output")] = False,
) -> None:
    """Run the thesis grid of a preset (train + evaluate per cell), then tables, plots and report."""
    from ..experiments import reproduce as run

    given = parse_set(sets or [])
    target = out or Path("runs") / Path(preset).stem
    summary = run(
        preset,
        target,
        jobs=jobs,
        only=only,
        data_dir=str(data_dir) if data_dir else None,
        device=device,
        progress=not quiet,
        overrides=given,
    )
    typer.echo(
        json.dumps(
            {
                "out": str(target),
                "report": str(summary.files["report.md"]),
                "cells": {o.name: o.status for o in summary.outcomes},
            }
        )
    )


@app.command()
@user_errors
def compare(
    presets: Annotated[list[str], typer.Argument(help="PRESET=RESULTS_DIR, two or more (e.g. cpu=docs/results/cpu)")],
    out: Annotated[Path, typer.Option(help="folder for models.md/.csv, comparisons.md/.csv, tradeoff.png")],
) -> None:
    """Compare the evaluated models of finished presets: every pair with its interval, and the trade-off plot."""
    from ..experiments.compare import compare as run

    pairs = [p.partition("=") for p in presets]
    bad = [given for given, (name, sep, folder) in zip(presets, pairs) if not (name and sep and folder)]
    if bad:
        raise ConfigError(f"expected PRESET=RESULTS_DIR, got {', '.join(map(repr, bad))}")
    files = run({name: Path(folder) for name, _, folder in pairs}, out)
    typer.echo(json.dumps({name: str(path) for name, path in files.items()}))


@app.command()
@user_errors
def sweep(
    config: Annotated[Path, typer.Argument(help="sweep .toml file (e.g. configs/sweeps/app_recipe.toml)")],
    out: Annotated[Path, typer.Option(help="output directory: one run per variant, sweep.md/.csv")],
    only: Annotated[str | None, typer.Option(help="comma-separated globs over variant keys")] = None,
    data_dir: Annotated[Path | None, typer.Option(envvar="APPROP_DATA")] = None,
    sets: Annotated[
        list[str] | None, typer.Option("--set", metavar=SET_VAR, help=SET_HELP + SET_GRID.format("variant"))
    ] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
) -> None:
    """Train every variant of a sweep and score it on the validation split (never on test data)."""
    from ..experiments.sweep import load_sweep, run_sweep

    given = parse_set(sets or [])
    spec = load_sweep(config, data_dir=str(data_dir) if data_dir else None, overrides=given)
    rows = run_sweep(spec, out, only=only, progress=not quiet)
    typer.echo(
        json.dumps({"out": str(out), "table": str(out / "sweep.md"), "scored": [r["key"] for r in rows if r["scores"]]})
    )


@app.command()
@user_errors
def fronts(
    results: Annotated[
        Path, typer.Argument(help="a preset's results folder (e.g. runs/fronts or docs/results/fronts)")
    ],
    out: Annotated[Path | None, typer.Option(help="folder for the fronts_* files (default: RESULTS)")] = None,
    preset: Annotated[str | None, typer.Option(help="list this preset's cells (default: the folder's cells)")] = None,
) -> None:
    """Trade-off fronts (APP vs AWP) of a results folder: table, pairs, plots and verdicts, pending cells listed."""
    from ..experiments.fronts import fronts as run

    view = run(results, out, preset=preset)
    typer.echo(
        json.dumps(
            {
                "files": {name: str(path) for name, path in view.files.items()},
                "verdicts": [{"claim": v.claim, "decided": v.decided} for v in view.verdicts],
                "pending": [p.name for p in view.pending],
                "main_choice": view.choice.chosen.cell if view.choice.chosen else None,
                "main_choice_final": view.choice.final,
            },
            ensure_ascii=False,
        )
    )


@app.command()
@user_errors
def validate(
    run_dir: Annotated[Path, typer.Argument(help="a trained run directory (trained with data.val_split > 0)")],
    n: Annotated[int, typer.Option(help="first N validation images")] = 2000,
    eps: Annotated[float | None, typer.Option(help="L∞ input radius; default: the run's ε")] = None,
    pgd_steps: Annotated[int, typer.Option(help="PGD steps")] = 20,
    lam: Annotated[float | None, typer.Option(help="also verify over the run's radius kind at this λ")] = None,
    data_dir: Annotated[Path | None, typer.Option(envvar="APPROP_DATA")] = None,
    device: Annotated[str | None, typer.Option(help="cpu | cuda (default: the run's)")] = None,
) -> None:
    """Score a trained run on its validation split (clean, PGD, verified with Wilson intervals) into RUN/val.json."""
    from ..experiments.validate import summary_line, validate_run

    result = validate_run(
        run_dir, n=n, eps=eps, pgd_steps=pgd_steps, lam=lam, data_dir=str(data_dir) if data_dir else None, device=device
    )
    typer.echo(
        json.dumps({"val": str(run_dir / "val.json"), "n": result["n"], **summary_line(result)}, ensure_ascii=False)
    )
