"""Tables (Markdown + CSV) and the plot of `approp faults` results, for one model or several side by side."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from ..formatting import pyplot
from ..rundir import atomic_write
from ..stats.intervals import Proportion, decided, difference, format_pct, wilson
from .run import RESULTS, flips_summary

BER_COLUMNS = (
    "model",
    "p",
    "accuracy",
    "low",
    "high",
    "worst draw",
    "bits flipped per network",
    "certified p(x) ≤ p0",
    "certified low",
    "certified high",
)
BFA_COLUMNS = (
    "model",
    "int8 accuracy",
    "flips to chance",
    "accuracy after cap",
    "points attacked",
    "median flips per point",
    "changed by 1 flip",
    "changed by 3 flips",
    "changed within cap",
)


def _cert(result: dict, p_key: str) -> Proportion | None:
    cert = result["stages"].get(f"cert:{p_key}")
    return wilson(cert["certified_k"], cert["points"]) if cert else None


def ber_rows(results: dict[str, dict]) -> list[dict[str, Any]]:
    """Returns one row per (model, p): accuracy with its interval, and the certified share where computed."""
    rows = []
    for label, result in results.items():
        for name, stage in result["stages"].items():
            if not name.startswith("ber:"):
                continue
            cert = _cert(result, name[4:])
            rows.append(
                {
                    "model": label,
                    "p": stage["p"],
                    "accuracy": stage["acc"],
                    "low": stage["lower"],
                    "high": stage["upper"],
                    "worst draw": stage["acc_min_draw"],
                    "bits flipped per network": stage["bits_flipped_mean"],
                    "certified p(x) ≤ p0": cert.value if cert else None,
                    "certified low": cert.lower if cert else None,
                    "certified high": cert.upper if cert else None,
                }
            )
    return rows


def bfa_rows(results: dict[str, dict]) -> list[dict[str, Any]]:
    """Returns one row per model with the bit-flip attack's numbers (shares as Wilson proportions)."""
    rows = []
    for label, result in results.items():
        bfa = result["stages"].get("bfa")
        if bfa is None:
            continue
        per = result["stages"].get("bfa_points")
        summary = flips_summary(per) if per else None
        rows.append(
            {
                "model": label,
                "int8 accuracy": wilson(round(bfa["acc"][0] * bfa["n"]), bfa["n"]),
                "flips to chance": bfa["flips_to_chance"] if bfa["flips_to_chance"] is not None else f"> {bfa['cap']}",
                "accuracy after cap": wilson(round(bfa["acc"][-1] * bfa["n"]), bfa["n"]),
                "points attacked": summary["n"] if summary else 0,
                "median flips per point": (summary["median"] if summary["median"] is not None else f"> {per['cap']}")
                if summary
                else None,
                **(
                    {f"changed by {k} flip{'s' if k > 1 else ''}": summary["within"][k] for k in (1, 3)}
                    if summary
                    else {}
                ),
                "changed within cap": summary["within"][per["cap"]] if summary else None,
            }
        )
    return rows


def faults_summary(result: dict) -> str:
    """Returns one sentence for a report: accuracy at each bit error rate and the attack's flips to chance."""
    stages = result["stages"]
    bfa = stages.get("bfa")
    parts = (
        [
            "accuracy "
            + ", ".join(f"{v['acc']:.1%} at p = {v['p']:g}" for k, v in stages.items() if k.startswith("ber:"))
        ]
        if any(k.startswith("ber:") for k in stages)
        else []
    )
    if bfa:
        parts.append(
            f"bit-flip attack: {bfa['flips_to_chance']} flips to chance"
            if bfa["flips_to_chance"]
            else f"bit-flip attack: not at chance within {bfa['cap']} flips"
        )
    return "Bit errors in the int8 weights (details in faults/faults.md): " + "; ".join(parts) + "."


def _cell(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, Proportion):
        return str(v)
    return f"{v:g}" if isinstance(v, float) else str(v)


def _csv_cell(v: Any) -> str:
    if isinstance(v, Proportion):
        return f"{100 * v.value:.2f}"
    return "" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v))


def faults_markdown(results: dict[str, dict], command: str | None = None) -> str:
    """Returns the Markdown page: accuracy against the bit error rate and the bit-flip attack table."""
    first = next(iter(results.values()))["settings"]
    lines = [
        "# Bit errors in the int8 weights",
        "",
        f"{first['n']} points of {first['data']}. Weights stored as int8 on the deployment grid (per output "
        "channel, [−127, 127], s = max|w|/127, two's complement); biases and BatchNorm float.",
        "",
        f"## Random bit errors ({first['draws']} networks per rate, every stored bit flips with probability p)",
        "",
        "Accuracy in % with a 95 % crossed-bootstrap interval over networks and points; the certified "
        f"share (p(x) ≤ p0 = {first['p0']:g} at 1 − δ, δ = {first['delta']:g} jointly) with its Wilson "
        "interval where computed.",
        "",
        "| model | p | accuracy | worst network | bits flipped per network | certified p(x) ≤ p0 |",
        "|---|---|---|---|---|---|",
    ]
    for r in ber_rows(results):
        cert = (
            format_pct(r["certified p(x) ≤ p0"], r["certified low"], r["certified high"])
            if r["certified p(x) ≤ p0"] is not None
            else "–"
        )
        lines.append(
            f"| {r['model']} | {r['p']:g} | {format_pct(r['accuracy'], r['low'], r['high'])} | "
            f"{100 * r['worst draw']:.1f} | {r['bits flipped per network']:.1f} | {cert} |"
        )
    bfa = bfa_rows(results)
    if bfa:
        lines += [
            "",
            f"## Bit-flip attack (Rakin et al. 2019, progressive bit search; loss on the first "
            f"{first['bfa_batch']} points, accuracy on all; chance = accuracy ≤ {100 * first['chance']:.0f} %)",
            "",
            "| " + " | ".join(BFA_COLUMNS) + " |",
            "|" + "---|" * len(BFA_COLUMNS),
        ]
        lines += ["| " + " | ".join(_cell(r.get(c)) for c in BFA_COLUMNS) + " |" for r in bfa]
        lines += [
            "",
            "Per point: the same search on that point alone until its prediction changes (correctly "
            "classified points only); shares with Wilson intervals.",
        ]
    if command:
        lines += ["", f"Command: `{command}`"]
    return "\n".join(lines) + "\n"


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(columns)
    writer.writerows([[_csv_cell(r.get(c)) for c in columns] for r in rows])
    atomic_write(path, buf.getvalue())


def plot_faults(results: dict[str, dict], path: Path) -> None:
    """Writes the figure: accuracy against the bit error rate (with intervals) and along the bit-flip attack."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for label, result in results.items():
        rows = ber_rows({label: result})
        if rows:
            ps = [r["p"] for r in rows]
            acc = [100 * r["accuracy"] for r in rows]
            err = [
                [100 * max(0.0, r["accuracy"] - r["low"]) for r in rows],  # bootstrap ends can sit on the mean
                [100 * max(0.0, r["high"] - r["accuracy"]) for r in rows],
            ]
            left.errorbar(ps, acc, yerr=err, marker="o", capsize=3, label=label)
        bfa = result["stages"].get("bfa")
        if bfa:
            right.plot(range(len(bfa["acc"])), [100 * a for a in bfa["acc"]], marker=".", label=label)
    left.set(xscale="log", xlabel="bit error rate p", ylabel="accuracy (%)", title="random bit errors")
    right.set(xlabel="bits flipped", ylabel="accuracy (%)", title="bit-flip attack")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def write_faults_report(results: dict[str, dict], out: Path, command: str | None = None) -> dict[str, Path]:
    """Returns the paths of faults.md, faults_ber.csv, faults_bfa.csv and faults.png after writing them in out."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "faults.md": out / "faults.md",
        "faults_ber.csv": out / "faults_ber.csv",
        "faults_bfa.csv": out / "faults_bfa.csv",
        "faults.png": out / "faults.png",
    }
    atomic_write(files["faults.md"], faults_markdown(results, command))
    _write_csv(files["faults_ber.csv"], BER_COLUMNS, ber_rows(results))
    _write_csv(files["faults_bfa.csv"], BFA_COLUMNS, bfa_rows(results))
    plot_faults(results, files["faults.png"])
    return files


def comparison_rows(results: dict[str, dict], pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Returns per model pair and measure: both values, the difference and whether it is decided.

    Accuracy under bit errors: decided when the two 95 % crossed-bootstrap intervals do not overlap (a
    conservative rule: the intervals are not combined). Per-point attack shares: Newcombe's interval
    of the difference of two Wilson proportions excludes 0 (approp.stats.intervals.decided).
    """
    ber = {(r["model"], r["p"]): r for r in ber_rows(results)}
    bfa = {r["model"]: r for r in bfa_rows(results)}
    rows = []
    for a, b in pairs:
        for (model, p), ra in ber.items():
            rb = ber.get((b, p))
            if model != a or rb is None:
                continue
            rows.append(
                {
                    "pair": f"{a} − {b}",
                    "measure": f"accuracy at p = {p:g}",
                    "a": format_pct(ra["accuracy"], ra["low"], ra["high"]),
                    "b": format_pct(rb["accuracy"], rb["low"], rb["high"]),
                    "difference": f"{100 * (ra['accuracy'] - rb['accuracy']):+.1f}",
                    "decided": ra["low"] > rb["high"] or rb["low"] > ra["high"],
                }
            )
        for measure in ("changed by 1 flip", "changed within cap"):
            pa, pb = bfa.get(a, {}).get(measure), bfa.get(b, {}).get(measure)
            if isinstance(pa, Proportion) and isinstance(pb, Proportion):
                d, lo, hi = difference(pa, pb)
                rows.append(
                    {
                        "pair": f"{a} − {b}",
                        "measure": f"attacked points {measure}",
                        "a": str(pa),
                        "b": str(pb),
                        "difference": f"{100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]",
                        "decided": decided(pa, pb),
                    }
                )
    return rows


def comparison_markdown(results: dict[str, dict], pairs: list[tuple[str, str]]) -> list[str]:
    """Returns Markdown lines of comparison_rows."""
    lines = ["| pair | measure | first | second | difference (points) | decided |", "|---|---|---|---|---|---|"]
    lines += [
        f"| {r['pair']} | {r['measure']} | {r['a']} | {r['b']} | {r['difference']} | "
        f"{'yes' if r['decided'] else 'no'} |"
        for r in comparison_rows(results, pairs)
    ]
    return lines


def combine(
    folders: dict[str, Path], out: Path, pairs: list[tuple[str, str]], command: str | None = None
) -> dict[str, Path]:
    """Returns the files written in out: the tables and plot of several models' faults.json side by side, and
    comparisons.md with every pair's differences and whether they are decided."""
    results = {label: json.loads((Path(folder) / RESULTS).read_text()) for label, folder in folders.items()}
    files = write_faults_report(results, out, command)
    path = atomic_write(Path(out) / "comparisons.md", "\n".join(comparison_markdown(results, pairs)) + "\n")
    return {**files, "comparisons.md": path}
