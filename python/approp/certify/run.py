"""`approp certify`: the certified-λ curve, per-point λ*, and quantisation certificates of one model.

    from approp.certify.run import CertifyConfig, certify_model
    results = certify_model(model, points, CertifyConfig(lams=(0.02, 0.04), quant=("int8", "int4")))

Results are plain JSON (certify.json beside the model, or in the evaluation's eval.json
under "certify"): counts, not only shares, so every share carries its Wilson interval.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..bounds.verify import Method, check_method
from ..config import ConfigError
from ..formatting import dash, table_lines
from ..rundir import CERTIFY_REPORT as REPORT
from ..rundir import CERTIFY_RESULTS as RESULTS
from ..rundir import atomic_write
from ..stats.intervals import wilson
from .deploy import deployed_check
from .parameter import RadiusGrid, certified_curve, certified_radius
from .quant_margin import margin_markdown, quant_margins
from .quantise import QuantSpec, predictions, quant_certificate, result_label
from .sources import Points


@dataclass(frozen=True)
class CertifyConfig:
    """Options of `approp certify` (defaults in brackets).

    lams: λ of the certified curve [the parameter attack's 0.02 … 0.1]; radius: compute λ* per
    point [True]; grid: where λ* is searched [RadiusGrid()]; quant: 'int8', 'int4', … with an
    optional ':tensor' and ':torch' (QuantSpec.parse) [()]; quant_margin: per point the certified
    fraction of each quantisation's half-step and the fewest bits certified [False]; onnx: run each
    quantised network in ONNX Runtime and by a quantiser without torch.ao, both tie rules [False]; eps: an input
    ball certified together with the box [0]; method: 'best' | 'crown' | 'ibp' ['best']; batch_size [250].
    """

    lams: tuple[float, ...] = (0.02, 0.04, 0.06, 0.08, 0.1)
    radius: bool = True
    grid: RadiusGrid = field(default_factory=RadiusGrid)
    quant: tuple[str, ...] = ()
    quant_margin: bool = False
    onnx: bool = False
    eps: float = 0.0
    method: Method = "best"
    batch_size: int = 250

    def __post_init__(self) -> None:
        object.__setattr__(self, "lams", tuple(float(v) for v in self.lams))
        object.__setattr__(self, "quant", tuple(self.quant))
        for lam in self.lams:
            if not math.isfinite(lam) or not 0 <= lam < 1:
                raise ConfigError(f"certify λ values must be in [0, 1); got {lam!r}")
        for q in self.quant:
            QuantSpec.parse(q)
        if not math.isfinite(self.eps) or self.eps < 0:
            raise ConfigError(f"certify eps must be >= 0; got {self.eps!r}")
        check_method(self.method)


def _forward_seconds(model: nn.Module, x: torch.Tensor, repeats: int = 3) -> float:
    """Returns the median seconds of one plain forward pass over x (the cost unit)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predictions(model, x)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def certify_model(model: nn.Module, points: Points, cfg: CertifyConfig) -> dict[str, Any]:
    """Returns the certificates of `model` on `points` as a JSON-ready dict (see `certify_markdown`)."""
    model.eval()
    x, y = points.x, points.y
    correct = predictions(model, x) == y  # (N,)
    out: dict[str, Any] = {
        "data": points.source,
        "n": len(y),
        "correct": int(correct.sum()),
        "eps": cfg.eps,
        "method": cfg.method,
        "seconds": {},
    }
    forward = _forward_seconds(model, x)
    out["seconds"]["forward"] = forward
    t0 = time.perf_counter()
    curve = certified_curve(model, x, y, cfg.lams, cfg.eps, cfg.method, cfg.batch_size)
    out["seconds"]["curve"] = time.perf_counter() - t0
    out["curve"] = [
        {
            "lam": lam,
            "certified": int((mask & correct).sum()),
            "of": int(correct.sum()),
            "flips_at_most": int((correct & ~mask).sum()),
        }
        for lam, mask in curve.items()
    ]
    if cfg.radius:
        t0 = time.perf_counter()
        lam_star = certified_radius(model, x, y, cfg.grid, cfg.eps, cfg.method, cfg.batch_size)
        spent = time.perf_counter() - t0
        out["seconds"]["radius"] = spent
        out["radius"] = {
            "grid": [cfg.grid.lam_min, cfg.grid.lam_max, cfg.grid.points],
            "checks_per_point": cfg.grid.checks(),
            "forward_passes_per_point": spent / forward if forward > 0 else None,
            "lam_star": lam_star.tolist(),
        }
    out["quant"] = []
    for text in cfg.quant:
        t0 = time.perf_counter()
        entry = quant_certificate(model, x, y, QuantSpec.parse(text), cfg.method, cfg.batch_size)
        if cfg.onnx:
            entry |= deployed_check(model, x, y, QuantSpec.parse(text), torch.tensor(entry["certified"]))
        out["quant"].append(entry)
        out["seconds"][f"quant {text}"] = time.perf_counter() - t0
    if cfg.quant_margin:
        out["quant_margin"] = []
        for text in cfg.quant:
            t0 = time.perf_counter()
            out["quant_margin"].append(
                quant_margins(model, x, y, QuantSpec.parse(text), method=cfg.method, batch_size=cfg.batch_size)
            )
            out["seconds"][f"quant margin {text}"] = time.perf_counter() - t0
    return out


def _pct(k: int, n: int) -> str:
    """Returns k/n in % with its 95 % Wilson interval, or "–" where n = 0."""
    return dash(wilson(k, n) if n else None)


def lam_star_quantiles(result: dict[str, Any]) -> dict[str, float] | None:
    """Returns the 25/50/75 % quantiles of λ* over the correctly classified points (None without λ*)."""
    radius = result.get("radius")
    if not radius:
        return None
    lam = torch.tensor(radius["lam_star"], dtype=torch.float64)
    lam = lam[lam > 0] if (lam > 0).any() else lam
    q = torch.quantile(lam, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)).tolist()
    return dict(zip(("q25", "median", "q75"), q))


def certify_markdown(result: dict[str, Any], title: str = "Certified parameter robustness") -> list[str]:
    """Returns Markdown lines: the certified-λ table, λ* quantiles and the quantisation table."""
    lines = [
        f"## {title}",
        "",
        f"{result['n']} points of {result['data']}; {result['correct']} classified correctly. "
        f"Bounds: {result['method']}, input ball ε = {result['eps']:g}; shares in % with 95 % Wilson intervals.",
        "",
    ]
    lines += table_lines(
        ["λ", "certified (of correct)", "flips at most (of correct)"],
        [[f"{r['lam']:g}", _pct(r["certified"], r["of"]), _pct(r["flips_at_most"], r["of"])] for r in result["curve"]],
    )
    q = lam_star_quantiles(result)
    if q is not None:
        rad = result["radius"]
        lines += [
            "",
            f"Certified radius λ* (bisection over {rad['grid'][2]} λ from {rad['grid'][0]:g} to "
            f"{rad['grid'][1]:g}, {rad['checks_per_point']} checks per point, about "
            f"{rad['forward_passes_per_point']:.0f} forward passes per point) over the points with λ* > 0: "
            f"quartiles {q['q25']:.3g}, {q['median']:.3g}, {q['q75']:.3g}.",
        ]
    if result.get("quant"):
        keys = ("certified_unchanged", "certified_correct", "float_correct", "quantised_correct", "kept")
        lines += [""] + table_lines(
            [
                "quantisation",
                "certified unchanged",
                "certified correct",
                "float accuracy",
                "quantised accuracy",
                "prediction kept",
            ],
            [[result_label(r), *(_pct(r[k], r["n"]) for k in keys)] for r in result["quant"]],
        )
        deployed = [r for r in result["quant"] if "onnx_correct" in r]
        if deployed:
            kept = ("quantised_correct", "onnx_correct", "onnx_kept", "half_even_kept", "half_away_kept")
            lines += [""] + table_lines(
                [
                    "quantisation",
                    "PyTorch accuracy",
                    "ONNX Runtime accuracy",
                    "ONNX Runtime kept",
                    "half-even kept",
                    "half-away kept",
                    "certified but changed (ORT, even, away)",
                ],
                [
                    [
                        r["spec"],
                        *(_pct(r[k], r["n"]) for k in kept),
                        f"{r['onnx_violations']}, {r['half_even_violations']}, {r['half_away_violations']}",
                    ]
                    for r in deployed
                ],
            )
        lines += [
            "",
            "int8 is the deployment grid (integers in [−127, 127], s = max|w|/127 per output channel: "
            "TensorRT, ONNX Runtime, TFLite); ':torch' PyTorch's observer grid ([−128, 127], s = max|w|/127.5); "
            "':tensor' one step per tensor. The box is closed: every tie rule is inside it.",
        ]
    for margin in result.get("quant_margin", []):
        lines += [""] + margin_markdown(margin)
    return lines + [""]


def write_results(out_dir: Path, result: dict[str, Any], command: str | None = None) -> tuple[Path, Path]:
    """Returns the paths of OUT_DIR/certify.json and certify.md after writing them (atomically)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in (
        (RESULTS, json.dumps(result, indent=2)),
        (REPORT, "\n".join(certify_markdown(result)) + (f"\nCommand: `{command}`\n" if command else "")),
    ):
        paths.append(atomic_write(out_dir / name, text))
    return paths[0], paths[1]


def certify_source(
    source: Path,
    cfg: CertifyConfig,
    n: int = 1000,
    data: Path | None = None,
    data_dir: str | None = None,
    input_range: tuple[float, float] = (0.0, 1.0),
    arch: str | None = None,
    out: Path | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Returns the certificates of a run directory or model file after writing certify.json/.md.

    The model (and every layer's support) is checked before any data is read; out defaults to
    the run directory, or FILE.certify/ beside a model file.
    """
    from .sources import load_points, load_source, wrap_range

    model, label = load_source(source, arch)
    points = load_points(data, n, data_dir, input_range)
    model = wrap_range(model, points.x.shape[1], input_range)
    result = {"model": label, **certify_model(model, points, cfg)}
    source = Path(source)
    target = out or (source if source.is_dir() else source.with_name(source.name + ".certify"))
    write_results(target, result, command)
    return result
