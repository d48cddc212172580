"""Statistical certificates: exact binomial bounds, their coverage on a model with a known answer,
the extreme-value estimate against the attack and the bound on a trained CNN4, and the evaluate stage."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import approp.certify.statistical as st
from approp.attacks.joint import joint_attack_margins
from approp.bounds import margin_lower_bounds
from approp.boxes import class_margin, sampled_margins
from approp.certify.statistical import StatisticalConfig, certify
from approp.certify.statistical_views import compare, estimates, margin_views
from approp.checkpoint import load_model, radius_from_meta
from approp.config import ConfigError, RadiusConfig
from approp.evaluate import RESULTS, STATE, EvalConfig, Evaluator
from approp.experiments.tables import Reference, result_from_eval, table1_rows, views_rows
from approp.radius import parameter_box
from approp.stats.binomial import (
    binomial_cdf,
    clopper_pearson_lower,
    clopper_pearson_upper,
    round_delta,
    samples_for_zero_failures,
    samples_needed,
)
from approp.stats.extreme_value import fit_reverse_weibull

pytest_plugins = ["trained"]  # the session's trained model and its fixtures

# (failures, n, δ, upper, lower): exact one-sided Clopper–Pearson bounds computed offline with
# mpmath's regularized incomplete beta. The first two rows are the textbook 95 % two-sided
# intervals (δ = 0.025 a side) for 1/10 → [0.0025, 0.4450] and 5/10 → [0.1871, 0.8129].
KNOWN = [
    (1, 10, 0.025, 0.4450161170281954, 0.0025285785444617848),
    (5, 10, 0.025, 0.8129139715526015, 0.18708602844739852),
    (0, 10, 0.025, 0.3084971078187608, 0.0),
    (3, 100, 0.05, 0.07571079374983004, 0.008225829107652688),
    (10, 1000, 1e-3, 0.023963812844688626, 0.0029695009304958643),
    (50, 200, 0.01, 0.32831599067726513, 0.181895994475476),
]


@pytest.mark.parametrize("f,n,delta,upper,lower", KNOWN)
def test_clopper_pearson_matches_known_values(f, n, delta, upper, lower):
    assert clopper_pearson_upper(f, n, delta).item() == pytest.approx(upper, rel=1e-9)
    assert clopper_pearson_lower(f, n, delta).item() == pytest.approx(lower, rel=1e-9, abs=1e-15)


def test_zero_failures_and_sample_counts():
    for n, delta in [(1, 0.05), (688, 1e-3), (5000, 1e-6)]:
        assert clopper_pearson_upper(0, n, delta).item() == pytest.approx(1 - delta ** (1 / n), rel=1e-9)
    assert clopper_pearson_upper(7, 7, 0.01).item() == 1.0
    assert samples_for_zero_failures(0.01, 1e-3) == 688 == samples_needed(0.01, 1e-3, 0)
    n1 = samples_needed(0.01, 1e-3, 1)
    assert clopper_pearson_upper(1, n1, 1e-3).item() <= 0.01 < clopper_pearson_upper(1, n1 - 1, 1e-3).item()
    # The binomial sum itself: P(X ≤ 1 | 10, 0.3) = 0.7^10 + 10·0.3·0.7^9.
    assert binomial_cdf(1, 10, 0.3).item() == pytest.approx(0.7**10 + 3 * 0.7**9, rel=1e-12)
    # Rounds of 128, 256, 512, 1024 draws: zero failures certify p ≤ 1 % for 1000 points at δ = 1e-3
    # only after the fourth (1920 draws), at that round's share of δ/1000.
    cfg = StatisticalConfig(samples=2000, delta=1e-3, p0=0.01)
    assert st.draws_to_certify(cfg, 1000) == 1920
    assert clopper_pearson_upper(0, 1920, round_delta(1e-6, 4)).item() <= 0.01
    assert clopper_pearson_upper(0, 896, round_delta(1e-6, 3)).item() > 0.01
    # The rounds' shares of δ sum to δ and never exceed it.
    partial = sum(round_delta(0.1, k) for k in range(1, 10_000))
    assert 0.0999 < partial < 0.1
    with pytest.raises(ValueError, match="delta"):
        clopper_pearson_upper(0, 10, 1.0)


# -- a model with a known answer ---------------------------------------------------------------

X0, EPS, A, B0, R0 = 0.5, 0.2, 1.0, -0.18, 0.2  # margin = A·x̃ + b̃0, x̃ ~ U[0.3, 0.7], b̃0 ~ U[-0.38, 0.02]: p = 0.02


def _affine():
    """Returns (model, box, x, y, p): one affine layer, two classes, whose exact misclassification chance is p.

    Class 0's logit is A·x + b0, class 1's is 0; only b0 (radius R0) and x (radius EPS) vary, so the
    margin is the sum of two independent uniforms and P(margin ≤ 0) has a closed form.
    """
    model = nn.Linear(1, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[A], [0.0]]))
        model.bias.copy_(torch.tensor([B0, 0.0]))
    box = {
        "weight": (model.weight.detach().clone(), model.weight.detach().clone()),
        "bias": (torch.tensor([B0 - R0, 0.0]), torch.tensor([B0 + R0, 0.0])),
    }
    # U = A·x̃ − (A·(X0 − EPS)) ∈ [0, 2A·EPS], V = b̃0 − (B0 − R0) ∈ [0, 2R0]; margin ≤ 0 ⇔ U + V ≤ t.
    t = -(A * (X0 - EPS) + B0 - R0)
    wa, wb = 2 * A * EPS, 2 * R0
    area = (max(t, 0) ** 2 - max(t - wa, 0) ** 2 - max(t - wb, 0) ** 2 + max(t - wa - wb, 0) ** 2) / 2
    return model.eval(), box, torch.tensor([[X0]]), torch.tensor([0]), area / (wa * wb)


def test_sampler_matches_the_exact_probability():
    model, box, x, y, p = _affine()
    assert 0.01 < p < 0.05
    gen = torch.Generator().manual_seed(0)
    margins = sampled_margins(model, box, x, y, EPS, 200_000, gen, chunk_images=50_000)  # (200000, 1)
    share = (margins <= 0).float().mean().item()
    assert abs(share - p) < 4 * math.sqrt(p * (1 - p) / 200_000)


def test_bounds_cover_the_exact_probability_at_their_confidence():
    model, box, x, y, p = _affine()
    reps, delta, n = 200, 0.1, 300
    slack = 3 * math.sqrt(delta * (1 - delta) / reps)
    fixed, seq, widths = 0, 0, []
    cfg = StatisticalConfig(samples=1024, delta=delta, p0=0.05, first_round=64, block=16, seed=0)
    for seed in range(reps):
        gen = torch.Generator().manual_seed(10_000 + seed)
        m = sampled_margins(model, box, x, y, EPS, n, gen)
        upper = clopper_pearson_upper(int((m <= 0).sum()), n, delta).item()
        fixed += p <= upper
        widths.append(upper)
        pts = certify(model, box, x, y, EPS, StatisticalConfig(**{**cfg.__dict__, "seed": seed}))
        seq += p <= pts[0].upper and pts[0].decision != st.REFUTED
    assert fixed / reps >= 1 - delta - slack
    assert seq / reps >= 1 - delta - slack
    # Not trivially covered: the bounds are informative (a few times p, far below 1).
    assert sum(widths) / reps < 4 * p


def test_sequential_test_stops_when_decided():
    model, box, x, y, p = _affine()
    cfg = StatisticalConfig(samples=100_000, delta=0.01, p0=0.2, first_round=64, block=16)
    pts = certify(model, box, x, y, EPS, cfg)
    assert pts[0].decision == st.CERTIFIED and pts[0].upper <= 0.2 and pts[0].samples < 1000
    cfg = StatisticalConfig(samples=100_000, delta=0.01, p0=0.001, first_round=64, block=16)
    pts = certify(model, box, x, y, EPS, cfg)
    assert pts[0].decision == st.REFUTED and pts[0].lower > 0.001 and pts[0].samples < 100_000


@pytest.mark.parametrize("field,value", [("samples", 0), ("delta", 1.0), ("p0", 0.0), ("block", 48)])
def test_bad_statistical_options_are_rejected(field, value):
    with pytest.raises(ConfigError, match=field):
        StatisticalConfig(**{field: value})
    if field in ("delta", "p0"):
        with pytest.raises(ConfigError, match=field):
            EvalConfig(**{field: value})


def test_reverse_weibull_recovers_a_known_endpoint():
    # X = 2 − U^(1/3)/2 has supremum 2 and P(X > 2 − s) ∝ s³ near it: shape 3.
    gen = torch.Generator().manual_seed(1)
    x = 2 - torch.rand(100, 200, generator=gen, dtype=torch.float64).pow(1 / 3) / 2
    fit = fit_reverse_weibull(x.amax(1))
    assert fit.endpoint and abs(fit.location - 2) < 0.02 and x.max() <= fit.location
    assert 1.5 < fit.shape < 6


# -- a trained CNN4 ---------------------------------------------------------------------------


def test_estimate_lies_above_the_attack_and_the_bound_on_trained_cnn4(trained_run, eval_points):
    model, meta = load_model(trained_run)
    radius, eps = radius_from_meta(meta), float(meta["eps"])
    points = eval_points.take(12)
    views = margin_views(model.eval(), points, radius, eps, attack_steps=10)
    cfg = StatisticalConfig(samples=256, first_round=128, block=16)
    x = points.x.float() / 255
    pts = certify(model, parameter_box(model, radius), x, points.y, eps, cfg)
    fits = estimates(pts)
    c = compare(views, pts, fits)
    assert c["bound_le_attack"] == 12 and c["points_with_estimate"] >= 9
    rows = [
        (b, a, f["estimate"], pt.min_margin, cl)
        for b, a, f, pt, cl in zip(views["bound"], views["attack"], fits, pts, views["clean"])
        if f is not None
    ]
    # The guarantee sits below everything; the estimate never above what was sampled.
    assert all(b <= e <= s + 1e-6 for b, _, e, s, _ in rows)
    # Measured: uniform draws in the box stay near the clean margin, while the joint attack goes much
    # lower, so the estimate lands between the attack and the sampled minimum, not below the attack.
    assert sum(a <= e for _, a, e, _, _ in rows) >= 0.8 * len(rows)
    assert sum(abs(s - cl) < abs(a - cl) for _, a, _, s, cl in rows) >= 0.8 * len(rows)


def test_joint_attack_lowers_margins_but_not_below_the_bound(trained_model, eval_points):
    x, y = eval_points.x[:4].float() / 255, eval_points.y[:4]
    radius = RadiusConfig(kind="abs", lam=0.01)
    got = joint_attack_margins(trained_model, parameter_box(trained_model, radius), x, y, 4 / 255, steps=5)
    with torch.no_grad():
        clean = class_margin(trained_model(x), y)
        lower = margin_lower_bounds(trained_model, x, y, 4 / 255, radius)
    bound = lower.masked_fill(torch.nn.functional.one_hot(y, 10).bool(), math.inf).amin(1)
    assert (got < clean).all() and (bound <= got).all()


# -- the evaluate stage ----------------------------------------------------------------------

SMALL = EvalConfig(n=6, pgd_steps=3, autoattack=False, verified=False, param_attack=(), statistical=256)


class _Interrupt(Exception):
    pass


def test_statistical_stage_writes_results_resumes_and_fills_table(trained_run, cifar_dir, tmp_path, monkeypatch):
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    real = st.run_round

    def flaky(*args, **kwargs):
        if args[7] == 2:  # round k = 2
            raise _Interrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(st, "run_round", flaky)
    with pytest.raises(_Interrupt):
        Evaluator(run, SMALL, data_dir=cifar_dir, progress=False).run()
    saved = json.loads((run / STATE).read_text())["partial"]["statistical"]
    assert {p["rounds"] for p in saved["points"]} == {1} and len(saved["views"]["attack"]) == 6
    monkeypatch.setattr(st, "run_round", real)
    res = Evaluator(run, SMALL, data_dir=cifar_dir, progress=False).run()
    stat = res["statistical"]
    assert json.loads((run / RESULTS).read_text())["statistical"]["summary"] == stat["summary"]
    s = stat["summary"]
    assert s["points"] == 6 and s["certified"] + s["refuted"] + s["undecided"] == pytest.approx(1)
    assert max(stat["points"]["samples"]) <= 256 and (run / "statistical.png").stat().st_size > 10_000
    assert "Statistical certificates" in (run / "report.md").read_text()
    (run / STATE).unlink()
    again = Evaluator(run, SMALL, data_dir=cifar_dir, progress=False).run()["statistical"]
    assert again["points"]["failures"] == stat["points"]["failures"]  # resuming draws what it would have
    cell = SimpleNamespace(eps_label="4/255", algo=SimpleNamespace(key="standard", label="Standard"))
    result = result_from_eval(cell, res)
    row = table1_rows([result], Reference())[0]
    assert row["p ≤ p₀ at 1 − δ"].value == pytest.approx(s["certified"])
    # bound ≤ attack ≤ clean at every point, so their medians keep that order in the views table.
    m = result.views
    assert m["bound"] <= m["attack"] <= m["clean"] and m["bound"] >= m["bound_interval"]
    view = views_rows([result])[0]
    assert view["refuted p > p₀"].value == pytest.approx(s["refuted"])
    assert float(view["joint attack"]) == pytest.approx(m["attack"], abs=1e-3)


def test_cli_rejects_a_bad_delta_naming_it(tmp_path):
    from typer.testing import CliRunner

    from approp.cli import app

    res = CliRunner().invoke(app, ["evaluate", str(tmp_path), "--statistical", "100", "--delta", "2"])
    assert res.exit_code == 1 and "eval.delta" in res.output
    assert list(tmp_path.iterdir()) == []
