"""Command line: parses options and dispatches to library functions, nothing more.

approp train --algo app --radius tanh --eps 0.0078 --lam 0.01 --epochs 10 --out runs/app
approp bounds runs/app --eps 0.0078
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from .julia import preload_for_argv

# With --engine julia, juliacall must be imported before torch (juliacall warns
# that the other order may segfault); the imports below pull torch in.
preload_for_argv(sys.argv[1:])

from .bounds.rules import UnsupportedLayerError  # noqa: E402
from .checkpoint import CheckpointError  # noqa: E402
from .config import ConfigError, RunConfig, parse_set  # noqa: E402
from .data import DataError  # noqa: E402
from .models import ARCHITECTURES  # noqa: E402
from .train.loop import TrainingDiverged  # noqa: E402

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="approp (Adversarial Parameter Propagation) trains and evaluates CNNs that stay correct when "
    "their parameters and their inputs are perturbed: it bounds a network's outputs over a box of "
    "parameters and a ball of inputs (interval and linear bounds), trains on that worst case (APP) or "
    "with AWP, PGD-AT or standard training, attacks and certifies trained networks, and runs the "
    "thesis's CIFAR-10 experiments. Run a command with --help for its options.",
)
err_console = Console(stderr=True)

# Errors that carry a message meant for the user: shown without a traceback.
USER_ERRORS: tuple[type[Exception], ...] = (
    ConfigError,
    DataError,
    CheckpointError,
    TrainingDiverged,
    UnsupportedLayerError,
)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turns a known user-facing error into a one-line message and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as err:
            from rich.markup import escape  # messages name sections as [train]: not markup

            err_console.print(f"[bold red]error:[/] {escape(str(err))}", soft_wrap=True)  # one line, unwrapped
            raise typer.Exit(1) from None

    return wrapper


def _overrides(sets: dict[str, dict[str, Any]], **sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Returns the options the user gave (None: not given), the --set values `sets` over them."""
    out = {}
    for name, values in sections.items():
        given = {k: v for k, v in values.items() if v is not None}
        if given:
            out[name] = given
    for name, values in sets.items():
        out[name] = {**out.get(name, {}), **values}
    return out


CLI_PRECISION = "auto"
SET_VAR = "SECTION.KEY=VALUE"
ARCH_HELP = f"architecture of a .safetensors file: {', '.join(ARCHITECTURES)} (optionally :WIDTH)"
SET_HELP = "any config field, e.g. train.ramp=smoothed or data.subset=none (repeatable)"
# --set on a grid or sweep: what it does to the finished cells or variants.
SET_GRID = (
    "; applied over every {0}'s run config, so it changes their fingerprints: "
    "{0}s finished with other settings run again, and a run folder holding another "
    "config refuses it (use a new --out)"
)
SET_TRAIN = SET_HELP + "; precedence: defaults < --config < the options above < --set"


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
    from .train import fit

    given = parse_set(sets or [])
    # Without a config file the command line trains in bf16 where the hardware has it (validated
    # against fp32 in docs/results/bf16); a file says for itself, and the library default is fp32.
    base = RunConfig.load(config) if config else RunConfig().replace(train={"precision": CLI_PRECISION})
    cfg = base.replace(
        **_overrides(
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


@app.command()
@user_errors
def bounds(
    run_dir: Annotated[
        Path, typer.Argument(help="a run directory, a torch.save'd model (any traceable module), or .safetensors")
    ],
    eps: Annotated[float | None, typer.Option(help="default: the run's ε (a model file: 0)")] = None,
    lam: Annotated[
        float | None, typer.Option(help="default: the run's λ (a model file: required, box [θ − λ|θ|, θ + λ|θ|])")
    ] = None,
    n: Annotated[int, typer.Option(help="test points")] = 1000,
    data_dir: Annotated[Path | None, typer.Option(envvar="APPROP_DATA")] = None,
    device: Annotated[str, typer.Option()] = "cpu",
    engine: Annotated[str, typer.Option(help="torch | julia")] = "torch",
    method: Annotated[str, typer.Option(help="ibp (interval) | crown (linear) | best (per margin the better)")] = "ibp",
    arch: Annotated[str | None, typer.Option(help=ARCH_HELP)] = None,
) -> None:
    """Print verified accuracy and mean logit-bound width of a trained model."""
    from .bound_summary import bound_summary

    summary = bound_summary(
        run_dir, eps=eps, lam=lam, n=n, data_dir=data_dir, device=device, engine=engine, method=method, arch=arch
    )
    typer.echo(json.dumps(summary))


@app.command("julia-setup")
@user_errors
def julia_setup(
    julia_exe: Annotated[str | None, typer.Option("--julia", help="julia executable to use")] = None,
    precompile: Annotated[bool, typer.Option("--precompile/--no-precompile")] = True,
) -> None:
    """Instantiate the pinned Julia environment once (needs an installed Julia 1.10)."""
    from . import julia

    try:
        report = julia.setup(julia=julia_exe, precompile=precompile)
    except julia.JuliaUnavailableError as err:
        raise ConfigError(str(err)) from None
    typer.echo(str(report))


def main() -> None:  # pragma: no cover - console entry
    app()


@app.command()
@user_errors
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="a trained run directory")],
    eps: Annotated[float | None, typer.Option(help="L∞ input radius; default: the run's ε")] = None,
    autoattack: Annotated[bool, typer.Option("--autoattack/--no-autoattack", help="AutoAttack (standard, L∞)")] = True,
    autoattack_n: Annotated[int | None, typer.Option(help="AutoAttack on the first K of the N points only")] = None,
    neighbourhood: Annotated[int, typer.Option(help="networks sampled per mode in the box (0: skip)")] = 0,
    param_attack: Annotated[
        str, typer.Option(help="comma-separated λ of the parameter attack ('' skips)")
    ] = "0.02,0.04,0.06,0.08,0.1",
    statistical: Annotated[
        int, typer.Option(help="most draws per point of the statistical certificates (0: skip)")
    ] = 0,
    delta: Annotated[float, typer.Option(help="statistical: confidence 1 - DELTA, jointly over the points")] = 1e-3,
    p0: Annotated[float, typer.Option(help="statistical: the misclassification probability certified")] = 0.01,
    certify: Annotated[str, typer.Option(help="comma-separated λ of the certified-λ curve ('' skips)")] = "",
    quant: Annotated[str, typer.Option(help="quantisation certificates, e.g. int8,int4,int8:tensor ('' skips)")] = "",
    faults: Annotated[str, typer.Option(help="bit error rates of the int8 weights, e.g. 1e-4,1e-3 ('' skips)")] = "",
    faults_bfa: Annotated[bool, typer.Option("--faults-bfa/--no-faults-bfa", help="the bit-flip attack")] = False,
    n: Annotated[int, typer.Option(help="first N test points")] = 1000,
    data_dir: Annotated[Path | None, typer.Option(envvar="APPROP_DATA")] = None,
    device: Annotated[str, typer.Option(help="cpu | cuda")] = "cpu",
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
) -> None:
    """Evaluate a trained run (clean, PGD, AutoAttack, verified, neighbourhood, parameter attack, statistical)."""
    from .evaluate import EvalConfig, Evaluator, parse_lams

    cfg = EvalConfig(
        eps=eps,
        n=n,
        autoattack=autoattack,
        autoattack_n=autoattack_n,
        neighbourhood=neighbourhood,
        param_attack=parse_lams(param_attack),
        statistical=statistical,
        delta=delta,
        p0=p0,
        certify=parse_lams(certify, "--certify"),
        quant=tuple(q for q in quant.split(",") if q.strip()),
        faults=parse_lams(faults, "--faults"),
        faults_bfa=faults_bfa,
    )
    results = Evaluator(run_dir, cfg, data_dir=data_dir, device=device, progress=not quiet).run()
    keys = ("clean_acc", "pgd_acc", "verified_acc")
    summary = {k: results.get(k) for k in keys}
    summary["autoattack_acc"] = results.get("autoattack", {}).get("robust_acc")
    if "statistical" in results:
        summary["statistical_certified"] = results["statistical"]["summary"]["certified"]
    typer.echo(json.dumps({"run_dir": str(run_dir), **summary}))


@app.command("certify")
@user_errors
def certify_cmd(
    source: Annotated[
        Path, typer.Argument(help="a run directory, a torch.save'd model (any traceable module), or .safetensors")
    ],
    lam: Annotated[
        str, typer.Option(help="comma-separated λ of the box [θ − λ|θ|, θ + λ|θ|]")
    ] = "0.02,0.04,0.06,0.08,0.1",
    quant: Annotated[
        str,
        typer.Option(
            help="weight quantisation: int8,int4 (deployment grid [−127, 127], per channel), "
            "int8:tensor (one step per tensor), int8:torch (PyTorch's grid) ('' skips)"
        ),
    ] = "",
    quant_margin: Annotated[
        bool,
        typer.Option(
            "--quant-margin/--no-quant-margin",
            help="per point the certified fraction of the half-step and the fewest bits certified",
        ),
    ] = False,
    onnx: Annotated[
        bool, typer.Option("--onnx/--no-onnx", help="run each quantised network in ONNX Runtime (needs approp[deploy])")
    ] = False,
    radius: Annotated[bool, typer.Option("--radius/--no-radius", help="per-point largest certified λ*")] = True,
    n: Annotated[int, typer.Option(help="first N points")] = 1000,
    data: Annotated[Path | None, typer.Option(help="torch.save'd (x, y) instead of CIFAR-10's test set")] = None,
    input_range: Annotated[str, typer.Option(help="LO,HI: the range of x in --data (what the model expects)")] = "0,1",
    arch: Annotated[str | None, typer.Option(help=ARCH_HELP)] = None,
    eps: Annotated[float, typer.Option(help="an input ball certified together with the box")] = 0.0,
    method: Annotated[str, typer.Option(help="best | crown | ibp")] = "best",
    out: Annotated[
        Path | None, typer.Option(help="folder for certify.json/.md (default: the run, or FILE.certify)")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(envvar="APPROP_DATA")] = None,
) -> None:
    """Certify a trained network: certified-λ curve, per-point λ*, quantisation certificates."""
    from .certify.run import CertifyConfig, certify_source
    from .certify.sources import parse_range
    from .evaluate import parse_lams

    cfg = CertifyConfig(
        lams=parse_lams(lam, "--lam"),
        radius=radius,
        quant=tuple(q for q in quant.split(",") if q.strip()),
        quant_margin=quant_margin,
        onnx=onnx,
        eps=eps,
        method=method,
    )
    result = certify_source(
        source,
        cfg,
        n=n,
        data=data,
        data_dir=str(data_dir) if data_dir else None,
        input_range=parse_range(input_range),
        arch=arch,
        out=out,
        command="approp certify " + " ".join(sys.argv[2:]),
    )
    typer.echo(
        json.dumps(
            {
                "model": result["model"],
                "n": result["n"],
                "correct": result["correct"],
                "certified": {f"{r['lam']:g}": r["certified"] for r in result["curve"]},
                "quant": {q["spec"]: q["certified_unchanged"] for q in result["quant"]},
            }
        )
    )


@app.command()
@user_errors
def faults(
    source: Annotated[Path, typer.Argument(help="a run directory, a torch.save'd model, or .safetensors with --arch")],
    ber: Annotated[str, typer.Option(help="comma-separated bit error rates p ('' skips)")] = "1e-5,1e-4,1e-3",
    draws: Annotated[int, typer.Option(help="faulty networks per rate for the accuracy")] = 20,
    statistical: Annotated[
        int, typer.Option(help="most networks per point of the certificate p(x) ≤ p0 (0 skips)")
    ] = 0,
    p0: Annotated[float, typer.Option(help="statistical: the misclassification probability certified")] = 0.05,
    delta: Annotated[float, typer.Option(help="statistical: confidence 1 - DELTA, jointly over the points")] = 1e-3,
    bfa: Annotated[bool, typer.Option("--bfa/--no-bfa", help="the progressive bit-flip attack")] = False,
    bfa_cap: Annotated[int, typer.Option(help="most flips of the attack on all points")] = 100,
    bfa_points: Annotated[int, typer.Option(help="points attacked one by one (0 skips)")] = 100,
    bfa_point_cap: Annotated[int, typer.Option(help="most flips per point")] = 20,
    n: Annotated[int, typer.Option(help="first N points")] = 1000,
    data: Annotated[Path | None, typer.Option(help="torch.save'd (x, y) instead of CIFAR-10's test set")] = None,
    arch: Annotated[str | None, typer.Option(help=ARCH_HELP)] = None,
    out: Annotated[
        Path | None, typer.Option(help="folder for faults.json/.md/.csv/.png (default: SOURCE/faults)")
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of the bit errors")] = 0,
    data_dir: Annotated[Path | None, typer.Option(envvar="APPROP_DATA")] = None,
) -> None:
    """Bit errors in the int8 weights: accuracy against the error rate, its certificate, the bit-flip attack."""
    from .certify.sources import load_points, load_source
    from .evaluate import parse_lams
    from .faults.report import write_faults_report
    from .faults.run import FaultsConfig, run_faults

    rates = parse_lams(ber, "--ber")
    cfg = FaultsConfig(
        ber=rates,
        draws=draws,
        statistical=statistical,
        p0=p0,
        delta=delta,
        bfa=bfa,
        bfa_cap=bfa_cap,
        bfa_points=bfa_points,
        bfa_point_cap=bfa_point_cap,
        seed=seed,
    )
    model, label = load_source(source, arch, check=False)  # forward passes and gradients only: any model
    points = load_points(data, n, str(data_dir) if data_dir else None)
    target = out or (source / "faults" if source.is_dir() else source.with_name(source.name + ".faults"))
    result = run_faults(model, points, cfg, target, label)
    files = write_faults_report({label: result}, target, "approp faults " + " ".join(sys.argv[2:]))
    typer.echo(
        json.dumps(
            {
                "out": str(target),
                "table": str(files["faults.md"]),
                "accuracy": {k[4:]: v["acc"] for k, v in result["stages"].items() if k.startswith("ber:")},
                "flips_to_chance": result["stages"].get("bfa", {}).get("flips_to_chance"),
            }
        )
    )


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
    from .experiments import reproduce as run

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
    from .experiments.compare import compare as run

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
    from .experiments.sweep import load_sweep, run_sweep

    given = parse_set(sets or [])
    spec = load_sweep(config, data_dir=str(data_dir) if data_dir else None, overrides=given)
    rows = run_sweep(spec, out, only=only, progress=not quiet)
    typer.echo(
        json.dumps({"out": str(out), "table": str(out / "sweep.md"), "scored": [r["key"] for r in rows if r["scores"]]})
    )


@app.command()
@user_errors
def landscape(
    run_dirs: Annotated[list[Path], typer.Argument(help="trained run directories to compare")],
    out: Annotated[Path, typer.Option(help="PNG to write")] = Path("landscape.png"),
    labels: Annotated[str | None, typer.Option(help="comma-separated labels (default: folder names)")] = None,
    n: Annotated[int, typer.Option(help="first N test points")] = 1000,
    points: Annotated[int, typer.Option(help="points on the 1-D line")] = 21,
    grid: Annotated[int, typer.Option(help="grid × grid points of the 2-D surface")] = 11,
    span: Annotated[float, typer.Option(help="relative step range [-span, span]")] = 1.0,
    step: Annotated[float, typer.Option(help="relative step of the flatness number")] = 0.1,
    seed: Annotated[int, typer.Option(help="seed of the random directions (same for every model)")] = 0,
    directions: Annotated[int, typer.Option(help="random directions the flatness number averages over")] = 10,
    data_dir: Annotated[Path | None, typer.Option(envvar="APPROP_DATA")] = None,
    device: Annotated[str, typer.Option(help="cpu | cuda")] = "cpu",
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
) -> None:
    """Plot the weight-loss landscape (filter-normalised directions, 1-D and 2-D) of runs on one figure."""
    from .landscape import LandscapeConfig, landscape_runs

    cfg = LandscapeConfig(n=n, points=points, grid=grid, span=span, step=step, seed=seed, directions=directions)
    names = labels.split(",") if labels else None
    curves = landscape_runs(run_dirs, cfg, out, names, data_dir, device, progress=not quiet)
    typer.echo(
        json.dumps(
            {
                "figure": str(out),
                "flatness": {k: ls.flatness for k, ls in curves.items()},
                "flatness_interval": {k: ls.flatness_interval for k, ls in curves.items()},
            }
        )
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
    from .experiments.fronts import fronts as run

    view = run(results, out, preset=preset)
    typer.echo(
        json.dumps(
            {
                "files": {name: str(path) for name, path in view.files.items()},
                "verdicts": [{"claim": v.claim, "decided": v.decided} for v in view.verdicts],
                "pending": [p.name for p in view.pending],
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
    from .experiments.validate import summary_line, validate_run

    result = validate_run(
        run_dir, n=n, eps=eps, pgd_steps=pgd_steps, lam=lam, data_dir=str(data_dir) if data_dir else None, device=device
    )
    typer.echo(
        json.dumps({"val": str(run_dir / "val.json"), "n": result["n"], **summary_line(result)}, ensure_ascii=False)
    )
