"""Commands that train one run: train, julia-setup."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..config import ConfigError, RunConfig, parse_set
from .common import CLI_PRECISION, SET_TRAIN, SET_VAR, app, overrides, user_errors


@app.command()
@user_errors
def train(
    out: Annotated[Path, typer.Option(help="run directory (resumes if it holds the same run)")],
    config: Annotated[Path | None, typer.Option(help="TOML config; options below override it")] = None,
    algo: Annotated[str | None, typer.Option(help="app | standard | awp | pgd")] = None,
    radius: Annotated[str | None, typer.Option(help="abs | const | tanh | quant (with --set radius.bits=N)")] = None,
    eps: Annotated[float | None, typer.Option(help="L∞ input radius on the [0,1] scale")] = None,
    lam: Annotated[float | None, typer.Option(help="parameter radius scale λ")] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    ramp_epochs: Annotated[int | None, typer.Option(help="epochs over which ε, λ ramp up")] = None,
    lr: Annotated[float | None, typer.Option()] = None,
    data_dir: Annotated[Path | None, typer.Option(envvar="APPROP_DATA")] = None,
    download: Annotated[bool, typer.Option(help="fetch CIFAR-10 with torchvision if missing")] = False,
    subset: Annotated[int | None, typer.Option(help="first N training images")] = None,
    val_split: Annotated[int | None, typer.Option(help="hold out the last N training images for validation")] = None,
    test_subset: Annotated[int | None, typer.Option(help="first N test images")] = None,
    margin_loss: Annotated[bool | None, typer.Option("--margin-loss/--no-margin-loss")] = None,
    device: Annotated[str | None, typer.Option(help="cpu | cuda")] = None,
    engine: Annotated[str | None, typer.Option(help="torch | julia")] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            help="fp32 | bf16 | auto (bf16 autocast in training where the device has native bf16; "
            "verification stays fp32) [default: the config's, else auto]"
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    sets: Annotated[list[str] | None, typer.Option("--set", metavar=SET_VAR, help=SET_TRAIN)] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
) -> None:
    """Train a CNN4 (APP, standard, AWP or PGD-AT) and write a run directory."""
    from ..train import fit

    given = parse_set(sets or [])
    # Without a config file the command line trains in bf16 where the hardware has it (validated
    # against fp32 in docs/results/bf16); a file says for itself, and the library default is fp32.
    base = RunConfig.load(config) if config else RunConfig().replace(train={"precision": CLI_PRECISION})
    cfg = base.replace(
        **overrides(
            given,
            data={
                "data_dir": str(data_dir) if data_dir else None,
                "subset": subset,
                "val_split": val_split,
                "test_subset": test_subset,
                "download": download or None,
            },
            radius={"kind": radius, "lam": lam},
            optim={"lr": lr},
            train={
                "algo": algo,
                "eps": eps,
                "epochs": epochs,
                "seed": seed,
                "ramp_epochs": ramp_epochs,
                "device": device,
                "engine": engine,
                "margin_loss": margin_loss,
                "precision": precision,
            },
        )
    )
    result = fit(cfg, out, progress=not quiet)
    last = result.history[-1] if result.history else {}
    typer.echo(json.dumps({"run_dir": str(out), **{k: last.get(k) for k in ("clean_acc", "verified_acc")}}))


@app.command("julia-setup")
@user_errors
def julia_setup(
    julia_exe: Annotated[str | None, typer.Option("--julia", help="julia executable to use")] = None,
    precompile: Annotated[bool, typer.Option("--precompile/--no-precompile")] = True,
) -> None:
    """Instantiate the pinned Julia environment once (needs an installed Julia 1.10)."""
    from .. import julia

    try:
        report = julia.setup(julia=julia_exe, precompile=precompile)
    except julia.JuliaUnavailableError as err:
        raise ConfigError(str(err)) from None
    typer.echo(str(report))
