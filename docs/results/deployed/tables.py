"""Writes docs/results/deployed/tables.md from the certify.json files beside it (one folder per model).

Run from the repository root: `PYTHONPATH=python python docs/results/deployed/tables.py`.
Shares in % with 95 % Wilson intervals; differences between models with Newcombe's interval (approp.stats),
'decided' where it excludes 0.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from approp.certify.quant_margin import margin_rows
from approp.stats.intervals import difference, wilson

HERE = Path(__file__).resolve().parent
MODELS = {
    "APP(tanh)": "cpu-app_tanh",
    "APP(abs)": "cpu-app_abs",
    "AWP": "cpu-awp",
    "standard": "cpu-standard",
    "APP(tanh), recipe": "cpu_recipe-app_tanh",
    "APP(abs), recipe": "cpu_recipe-app_abs",
}
PAIRS = [
    ("APP(tanh)", "AWP"),
    ("APP(abs)", "AWP"),
    ("APP(tanh)", "standard"),
    ("AWP", "standard"),
    ("APP(tanh), recipe", "AWP"),
    ("APP(abs), recipe", "AWP"),
    ("APP(tanh), recipe", "APP(tanh)"),
    ("APP(abs), recipe", "APP(abs)"),
]
SPECS = ("int8", "int6", "int4")


def load() -> dict[str, dict]:
    """Returns {model label: certify.json} for the folders present."""
    return {k: json.loads((HERE / v / "certify.json").read_text()) for k, v in MODELS.items() if (HERE / v).is_dir()}


def accuracy_table(results: dict[str, dict]) -> list[str]:
    """Returns Markdown lines: per model and grid, PyTorch's and ONNX Runtime's accuracy and what was certified."""
    lines = [
        "| model | grid | float accuracy | quantised accuracy, PyTorch | ONNX Runtime accuracy | ONNX Runtime kept "
        "| certified unchanged | certified correct | certified but changed (ORT, even, away) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, r in results.items():
        for q in r["quant"]:
            n = q["n"]
            cells = [q["float_correct"], q["quantised_correct"], q["onnx_correct"], q["onnx_kept"]]
            cells += [q["certified_unchanged"], q["certified_correct"]]
            changed = ", ".join(str(q[f"{k}_violations"]) for k in ("onnx", "half_even", "half_away"))
            lines.append(
                f"| {label} | {q['spec']} | " + " | ".join(str(wilson(k, n)) for k in cells) + f" | {changed} |"
            )
    return lines


def margin_table(results: dict[str, dict]) -> list[str]:
    """Returns Markdown lines: per model the share certified at each bit width and the int8 f* distribution."""
    first = next(iter(results.values()))["quant_margin"][0]
    bins = [label for label, _ in margin_rows(first)[1]]
    lines = [
        "| model | certified at int8 | at int6 | at int4 | median f* (int8, int6, int4) | "
        + " | ".join(f"int8 f* {b}" for b in bins)
        + " |",
        "|---|---|---|---|---|" + "---|" * len(bins),
    ]
    for label, r in results.items():
        margins = {m["spec"]: m for m in r["quant_margin"]}
        n = margins["int8"]["n"]
        by_bits, counts = margin_rows(margins["int8"])
        shown = {b: k for b, k, _ in by_bits}
        med = ", ".join(f"{statistics.median(margins[s]['fraction']):.3g}" for s in SPECS if s in margins)
        row = [str(wilson(shown[s], n)) for s in SPECS] + [med] + [str(wilson(k, n)) for _, k in counts]
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    return lines


def comparison_table(results: dict[str, dict]) -> list[str]:
    """Returns Markdown lines: differences in percentage points of the certified share at each bit width, of the
    share certified on at least a quarter of the int8 half-step, and of ONNX Runtime's int8 accuracy, with
    Newcombe's 95 % interval and whether it is decided."""
    lines = ["| comparison | measure | difference (pp) [95 %] | decided |", "|---|---|---|---|"]
    for a, b in PAIRS:
        if a not in results or b not in results:
            continue
        measures = {}
        for spec in SPECS:
            ma, mb = ({m["spec"]: m for m in results[k]["quant_margin"]}["int8"] for k in (a, b))
            ka, kb = ({bits: k for bits, k, _ in margin_rows(m)[0]}[spec] for m in (ma, mb))
            measures[f"certified at {spec}"] = (wilson(ka, ma["n"]), wilson(kb, mb["n"]))
        quarter = (sum(f >= 0.25 for f in m["fraction"]) for m in (ma, mb))
        measures["f* ≥ ¼ of the int8 half-step"] = tuple(wilson(k, m["n"]) for k, m in zip(quarter, (ma, mb)))
        qa, qb = results[a]["quant"][0], results[b]["quant"][0]
        measures["ONNX Runtime int8 accuracy"] = (
            wilson(qa["onnx_correct"], qa["n"]),
            wilson(qb["onnx_correct"], qb["n"]),
        )
        for name, (pa, pb) in measures.items():
            d, lo, hi = difference(pa, pb)
            yes = "yes" if lo > 0 or hi < 0 else "no"
            lines.append(f"| {a} − {b} | {name} | {100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] | {yes} |")
    return lines


def main() -> None:
    results = load()
    n = {r["n"] for r in results.values()}
    text = [
        "# Deployed int8 / int6 / int4: tables",
        "",
        "Written by `PYTHONPATH=python python docs/results/deployed/tables.py` "
        f"from the certify.json of {len(results)} models "
        f"({', '.join(map(str, sorted(n)))} test points each; commands in README.md). "
        "Shares in % with 95 % Wilson intervals. Each model's certify.json (and certify.md) was written by",
        "",
        "    approp certify docs/results/PRESET/cells/eps2over255-ALGO/run --lam '' --no-radius \\",
        "        --quant int8,int6,int4 --quant-margin --onnx --n 500 --data-dir DATA \\",
        "        --out docs/results/deployed/PRESET-ALGO",
        "",
        "(DATA: the JPEG quality-75 copy of CIFAR-10; OMP_NUM_THREADS=1). ONNX Runtime accuracy: the weight-only int8 "
        "(int6, int4) graph run by ONNX Runtime on the CPU; 'kept': its prediction equals the float network's.",
        "",
        "## Accuracy in PyTorch and ONNX Runtime, and the certificate",
        "",
        *accuracy_table(results),
        "",
        "## Margins: the fewest bits certified and the certified fraction f* of the int8 half-step",
        "",
        *margin_table(results),
        "",
        "## Differences between models (Newcombe's interval; the same test points, so a paired interval would be "
        "narrower)",
        "",
        *comparison_table(results),
        "",
    ]
    (HERE / "tables.md").write_text("\n".join(text))


if __name__ == "__main__":
    main()
