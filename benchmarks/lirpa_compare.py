"""approp's bounds against auto_LiRPA's (IBP, CROWN-IBP, CROWN) at λ = 0, and auto_LiRPA on perturbed weights.

    PYTHONPATH=python:AUTO_LIRPA_SOURCE python benchmarks/lirpa_compare.py [--data-dir data] [--n 16]
        [--eps 1/255,2/255,8/255] [--crown-points 1] [--archs cnn4,cnn4_bn,resnet20] [--chunk 4]

AUTO_LIRPA_SOURCE: a folder holding auto_LiRPA's source package and appdirs, tqdm and graphviz
(docs/results/lirpa/README.md says how to get them). Everything is float64.

Networks: the committed trained runs of docs/results (CNN4, resnet20), and for every architecture but CNN4 a
seeded IBP-initialised network (untrained) whose BatchNorm running statistics are the average over
512 CIFAR-10 training images. Points: the first n test images with their labels.

For every network and ε, over the margins z_y − z_j (j ≠ y) of the n points: the largest
difference between approp's and auto_LiRPA's IBP logit bounds relative to the largest |bound|; the
mean margin lower bound of approp's interval and linear bounds and of auto_LiRPA's IBP and
CROWN-IBP; the share of margins where approp's linear bound ≥ CROWN-IBP (to 1e-12 of the point's
largest |bound|) and where it is strictly tighter, the largest amount by which it is looser, and the
largest relative difference once approp's max-pooling uses auto_LiRPA's tie rule (the only rule in
which they differ: tests/lirpa_glue.lirpa_pool_relaxation); full CROWN on the first `crown-points`
points of the architectures in `crown-archs` (slow on CNN4, out of memory on ResNet-20). Then which
perturbed parameters auto_LiRPA bounds at all (one layer's weight in a box, the input fixed).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # tests/lirpa_glue.py: auto_LiRPA on approp's models

from lirpa_glue import (  # noqa: E402
    bounded,
    calibrate,
    conv_normalised,
    default_dtype,
    ibp_logits,
    lirpa_pool_rule,
    margins,
)

from approp.bounds import interval_bounds, linear_margin_bounds, margin_lower_bounds  # noqa: E402
from approp.checkpoint import load_model  # noqa: E402
from approp.config import ModelConfig, RadiusConfig  # noqa: E402
from approp.data import load_cifar10  # noqa: E402
from approp.formatting import table_lines  # noqa: E402
from approp.models import build_model  # noqa: E402

FLAT = RadiusConfig(kind="abs", lam=0.0)  # λ = 0
RTOL = 1e-12  # as tests/test_lirpa_compare.py: rounding of the same float64 products in another order
TRAINED = {  # committed trained runs, label -> (arch, run directory); a missing one is skipped
    "cnn4 (cpu_recipe app_tanh)": ("cnn4", REPO / "docs/results/cpu_recipe/cells/eps2over255-app_tanh/run"),
    "cnn4 (cpu standard)": ("cnn4", REPO / "docs/results/cpu/cells/eps2over255-standard/run"),
    "resnet20 (cpu_resnet standard)": ("resnet20", REPO / "docs/results/cpu_resnet/cells/eps2over255-standard/run"),
    "resnet20 (cpu_resnet app_tanh)": ("resnet20", REPO / "docs/results/cpu_resnet/cells/eps2over255-app_tanh/run"),
}
CALIBRATION = 512  # training images for the BatchNorm statistics of the untrained networks
HEADER = [
    "network",
    "ε",
    "max rel. IBP diff",
    "approp interval",
    "approp linear",
    "auto_LiRPA IBP",
    "CROWN-IBP",
    "linear ≥ CROWN-IBP",
    "linear > CROWN-IBP",
    "largest shortfall",
    "same pool rule: rel. diff",
    "CROWN (approp linear; points)",
]


def networks(archs: list[str], data_dir: str) -> Iterator[tuple[str, str, nn.Module]]:
    """Yields (label, arch, float64 model in eval mode): the committed trained runs, then seeded untrained networks.

    One at a time, so that a network and auto_LiRPA's graph of it are freed before the next is built.
    """
    for label, (arch, run) in TRAINED.items():
        if arch in archs and (run / "model.safetensors").is_file():
            yield label, arch, load_model(run)[0].double()
    images = load_cifar10(data_dir, train=True)[0][:CALIBRATION].float().div(255.0)
    for arch in archs:
        if arch != "cnn4":
            torch.manual_seed(0)
            model = calibrate(build_model(ModelConfig(arch=arch, init="ibp")), images)
            yield f"{arch} (untrained, IBP init)", arch, model.double()


def full_crown(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor | None:
    """Returns auto_LiRPA's CROWN margin bounds (B, K) on the Normalize-as-convolution copy, None if it fails."""
    try:
        return margins(bounded(conv_normalised(model), x), x, y, eps, "CROWN")
    except (RuntimeError, AssertionError, NotImplementedError) as err:
        print(f"full CROWN failed: {type(err).__name__}: {str(err)[:200]}", file=sys.stderr)
        return None


def others_mean(bounds: torch.Tensor, y: torch.Tensor) -> float:
    """Returns the mean over points and classes j ≠ y of margin bounds (B, K)."""
    keep = ~torch.nn.functional.one_hot(y, bounds.shape[1]).bool()
    return bounds[keep].mean().item()


def measure(model: nn.Module, module, x: torch.Tensor, y: torch.Tensor, eps: float, chunk: int) -> dict:
    """Returns every bound of the comparison for points x (B, 3, 32, 32), `chunk` points at a time (memory).

    Keys: logit bounds "ours_lower", "ours_upper" (approp's intervals), "ibp_lower", "ibp_upper"
    (auto_LiRPA's IBP); margin bounds (B, K) "interval", "linear" (approp), "lirpa_ibp", "crown_ibp"
    (auto_LiRPA) and "aligned" (approp's linear bounds with auto_LiRPA's max-pool tie rule).
    """
    parts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(x), chunk):
        xs, ys = x[start : start + chunk], y[start : start + chunk]
        ours = interval_bounds(model, xs, eps, FLAT)
        lower, upper = ibp_logits(module, xs, eps)
        with lirpa_pool_rule():
            aligned = linear_margin_bounds(model, xs, ys, eps, FLAT)
        found = {
            "ours_lower": ours.lower,
            "ours_upper": ours.upper,
            "ibp_lower": lower,
            "ibp_upper": upper,
            "interval": margin_lower_bounds(model, xs, ys, eps, FLAT),
            "linear": linear_margin_bounds(model, xs, ys, eps, FLAT),
            "lirpa_ibp": margins(module, xs, ys, eps, "IBP"),
            "crown_ibp": margins(module, xs, ys, eps, "CROWN-IBP"),
            "aligned": aligned,
        }
        for key, value in found.items():
            parts.setdefault(key, []).append(value.detach())
    return {key: torch.cat(values) for key, values in parts.items()}


def row(label: str, model: nn.Module, module, x, y, eps: float, chunk: int, crown_points: int) -> list:
    """Returns one table row (see HEADER) for `model` (auto_LiRPA's `module` of it) on points x, labels y, at ε."""
    b = measure(model, module, x, y, eps, chunk)
    scale = max(b["ibp_lower"].abs().max(), b["ibp_upper"].abs().max())
    ibp_diff = max((b["ours_lower"] - b["ibp_lower"]).abs().max(), (b["ours_upper"] - b["ibp_upper"]).abs().max())
    k = min(crown_points, len(x))
    crown = full_crown(model, x[:k], y[:k], eps) if k else None
    if k and crown is not None:
        crown_cell = f"{others_mean(crown, y[:k]):.4g} ({others_mean(b['linear'][:k], y[:k]):.4g}; {k})"
    else:
        crown_cell = "fails" if k else "—"
    return [
        label,
        f"{eps * 255:g}/255",
        f"{(ibp_diff / scale).item():.1e}",
        f"{others_mean(b['interval'], y):.4g}",
        f"{others_mean(b['linear'], y):.4g}",
        f"{others_mean(b['lirpa_ibp'], y):.4g}",
        *crown_ibp_cells(b, y),
        crown_cell,
    ]


def crown_ibp_cells(b: dict, y: torch.Tensor) -> list[str]:
    """Returns the cells comparing approp's linear margin bounds b["linear"] (B, K) with auto_LiRPA's CROWN-IBP.

    Mean CROWN-IBP bound; shares of margins where linear ≥ and > CROWN-IBP (beyond RTOL of the point's
    largest |bound|); the largest amount by which linear falls below beyond that; and the largest difference
    (relative to the largest |bound|) once approp's max-pooling uses auto_LiRPA's tie rule.
    """
    crown_ibp = b["crown_ibp"]
    keep = ~torch.nn.functional.one_hot(y, crown_ibp.shape[1]).bool()
    tol = (RTOL * crown_ibp.abs().amax(1, keepdim=True)).expand_as(crown_ibp)[keep]
    gap = (b["linear"] - crown_ibp)[keep]
    aligned_diff = (b["aligned"] - crown_ibp).abs().max() / crown_ibp.abs().max()
    return [
        f"{others_mean(crown_ibp, y):.4g}",
        f"{(gap >= -tol).double().mean().item():.1%}",
        f"{(gap > tol).double().mean().item():.1%}",
        f"{torch.where(gap < -tol, -gap, 0.0).max().item():.1e}",
        f"{aligned_diff.item():.1e}",
    ]


def weight_probe() -> list[list[str]]:
    """Returns rows (layer, method, outcome): auto_LiRPA on CNN4-BN with one layer's weight in a box of radius 0.01.

    The input is not perturbed; the model is the Normalize-as-convolution copy (tests/lirpa_glue.py), so a
    failure is about the perturbed weight, not about auto_LiRPA's handling of Normalize.
    """
    from auto_LiRPA import BoundedParameter, PerturbationLpNorm

    rows = []
    for kind in (nn.Conv2d, nn.BatchNorm2d, nn.Linear):
        torch.manual_seed(0)
        model = conv_normalised(build_model(ModelConfig(arch="cnn4_bn")).eval())
        layer = [m for m in model.modules() if type(m) is kind][-1 if kind is nn.Linear else 1]
        layer.weight = BoundedParameter(layer.weight.data, PerturbationLpNorm(norm=float("inf"), eps=0.01))
        x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        module = bounded(model, x)
        for method in ("IBP", "CROWN-IBP", "CROWN"):
            try:
                with default_dtype(x.dtype), torch.no_grad():
                    lower, upper = module.compute_bounds(x=(x,), method=method)
                outcome = f"bounds (mean width {(upper - lower).mean().item():.3g})"
            except (NotImplementedError, AssertionError, RuntimeError) as err:
                outcome = f"{type(err).__name__}: {err}"
            rows.append([type(layer).__name__, method, outcome])
    return rows


def main(argv: list[str] | None = None) -> None:
    """Prints the comparison table and the perturbed-weight table (Markdown)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(REPO / "data"))
    parser.add_argument("--n", type=int, default=16, help="test points per network")
    parser.add_argument("--eps", default="1/255,2/255,8/255", help="comma list; a/b allowed")
    parser.add_argument("--crown-points", type=int, default=1, help="points for full CROWN (0: skip)")
    parser.add_argument("--crown-archs", default="cnn4,cnn4_bn", help="architectures that get full CROWN")
    # preact_resnet18 needs about 7 GB per 4 points and more over 16 (docs/results/lirpa): ask for it by name
    parser.add_argument("--archs", default="cnn4,cnn4_bn,resnet20")
    parser.add_argument("--chunk", type=int, default=4, help="points per bound computation (memory)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    epsilons = [_fraction(e) for e in args.eps.split(",")]
    x, y = load_cifar10(args.data_dir, train=False)
    x, y = x[: args.n].double().div(255.0), y[: args.n]
    rows = []
    for label, arch, model in networks(args.archs.split(","), args.data_dir):
        crown_points = args.crown_points if arch in args.crown_archs.split(",") else 0
        module = bounded(model, x[: args.chunk])
        for eps in epsilons:
            rows.append(row(label, model, module, x, y, eps, args.chunk, crown_points))
            print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
        del model, module  # before the next network is built
    print("\n".join(table_lines(HEADER, rows)))
    print()
    print("\n".join(table_lines(["perturbed weight", "method", "auto_LiRPA"], weight_probe())))


def _fraction(text: str) -> float:
    """Returns the float of '0.01' or '2/255'."""
    num, _, den = text.partition("/")
    return float(num) / float(den) if den else float(num)


if __name__ == "__main__":
    main()
