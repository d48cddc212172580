"""The Evaluation section of a run's report.md, written from the results in eval.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .certify.run import certify_markdown
from .certify.statistical_views import statistical_markdown
from .faults.report import faults_summary
from .formatting import pct, table_lines
from .rundir import REPORT, atomic_write

SECTION = "## Evaluation"


def evaluation_markdown(results: dict[str, Any]) -> str:
    """Returns the report's Evaluation section for a results dict (as written to eval.json)."""
    r = results
    lines = [
        SECTION,
        "",
        f"On the first {r['n']} test images at eps = {r['eps']:.6g} "
        f"(checkpoint after epoch {(r.get('epoch') or 0) + 1}; accuracies in %).",
        "",
        *table_lines(
            ["clean", "PGD", "AutoAttack", "verified", "verified (linear)", "verified (best)"],
            [
                [
                    pct(v)
                    for v in (
                        r.get("clean_acc"),
                        r.get("pgd_acc"),
                        r.get("autoattack", {}).get("robust_acc"),
                        r.get("verified_acc"),
                        r.get("verified_acc_crown"),
                        r.get("verified_acc_best"),
                    )
                ]
            ],
        ),
        "",
        "Verified: interval bounds; linear: CROWN-style bounds over the same box and ball; best: per "
        "margin the better of both (linear and best count a margin only above its float rounding "
        "allowance).",
        "",
    ]
    if "autoattack" in r:
        cascade = r["autoattack"]["cascade"]
        lines += [
            "AutoAttack cascade (robust accuracy after each attack): "
            + ", ".join(f"{k} {pct(v)}" for k, v in cascade.items()),
            "",
        ]
    if "neighbourhood" in r:
        nb = r["neighbourhood"]
        stats = [(m, k) for m in ("clean_acc", "pgd_acc") for k in ("mean", "min", "spread")]
        lines += [f"Neighbourhood: {nb['k']} networks per mode in the {nb['kind']} box (lam {nb['lam']:g}).", ""]
        lines += table_lines(
            ["mode", "clean mean", "clean min", "clean spread", "PGD mean", "PGD min", "PGD spread"],
            [[mode, *(pct(s[m][k]) for m, k in stats)] for mode, s in nb["summary"].items()],
        )
        lines.append("")
    if "statistical" in r:
        lines += statistical_markdown(r["statistical"])
    if "certify" in r:
        lines += ["Certified parameter robustness:", ""] + certify_markdown(r["certify"])[2:]
    if "faults" in r:
        lines += [faults_summary(r["faults"]), ""]
    if "param_attack" in r:
        lines += ["Parameter attack in [θ − λ|θ|, θ + λ|θ|]:", ""]
        lines += table_lines(
            ["λ", "acc before", "acc after", "flipped"],
            [
                [f"{row['lam']:g}", *(pct(row[k]) for k in ("acc_before", "acc_after", "flipped"))]
                for row in r["param_attack"]
            ],
        )
        lines.append("")
    return "\n".join(lines)


def write_eval_report(run_dir: Path, results: dict[str, Any]) -> Path:
    """Returns the path of report.md after adding (or replacing) its Evaluation section."""
    path = Path(run_dir) / REPORT
    text = path.read_text() if path.is_file() else ""
    cut = text.find("\n" + SECTION)
    if cut >= 0:
        text = text[:cut]
    elif text.startswith(SECTION):
        text = ""
    text = text.rstrip("\n") + "\n\n" if text else ""
    return atomic_write(path, text + evaluation_markdown(results))
