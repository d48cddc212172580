"""Commands that examine trained networks: bounds, evaluate, certify, faults, landscape."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from .common import ARCH_HELP, app, user_errors


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
    from ..bound_summary import bound_summary

    summary = bound_summary(
        run_dir, eps=eps, lam=lam, n=n, data_dir=data_dir, device=device, engine=engine, method=method, arch=arch
    )
    typer.echo(json.dumps(summary))


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
    add_outcomes: Annotated[
        str,
        typer.Option(
            help="an evaluation made before per-point outcomes were kept: comma-separated stages "
            "(clean,pgd,autoattack,verified,param_attack or all) to run again with the same options, adding "
            "their outcomes where they reproduce its numbers",
        ),
    ] = "",
) -> None:
    """Evaluate a trained run (clean, PGD, AutoAttack, verified, neighbourhood, parameter attack, statistical)."""
    from ..evaluate import OUTCOME_STAGES, EvalConfig, Evaluator, parse_lams

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
    results = Evaluator(
        run_dir,
        cfg,
        data_dir=data_dir,
        device=device,
        progress=not quiet,
        add_outcomes=OUTCOME_STAGES if add_outcomes == "all" else [s for s in add_outcomes.split(",") if s.strip()],
    ).run()
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
    from ..certify.run import CertifyConfig, certify_source
    from ..certify.sources import parse_range
    from ..evaluate import parse_lams

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
    from ..certify.sources import load_points, load_source
    from ..evaluate import parse_lams
    from ..faults.report import write_faults_report
    from ..faults.run import FaultsConfig, run_faults

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
    from ..landscape import LandscapeConfig, landscape_runs

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
