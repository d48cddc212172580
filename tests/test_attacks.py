"""Attacks on a trained model: PGD, AutoAttack, the parameter attack, neighbourhood sampling."""

from __future__ import annotations

import time

import pytest
import torch

from approp.attacks import (
    STANDARD_ATTACKS,
    CascadeState,
    attack_box,
    autoattack,
    parameter_attack,
    pgd_accuracy,
    pgd_attack,
    relative_box,
)
from approp.config import ConfigError, RadiusConfig
from approp.data import to_float
from approp.metrics import clean_accuracy
from approp.neighbourhood import MODES, neighbourhood, sample_network, summarise
from approp.radius import parameter_box

EPS = 4 / 255  # the input radius these tests attack at

pytest_plugins = ["trained"]  # the session's trained model and its fixtures


def test_pgd_stays_in_ball_and_lowers_accuracy(trained_model, eval_points):
    x, y = to_float(eval_points.x), eval_points.y
    x_adv = pgd_attack(trained_model, x, y, EPS, steps=10)
    assert (x_adv - x).abs().max() <= EPS + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    clean = clean_accuracy(trained_model, eval_points)
    robust = pgd_accuracy(trained_model, eval_points, EPS, steps=10)
    assert clean > 0.3  # the fixture really learned something
    assert robust < clean - 0.05
    assert pgd_accuracy(trained_model, eval_points, 0.0) == pytest.approx(clean)
    # A larger ball can only help the attacker (same seed, same points).
    assert pgd_accuracy(trained_model, eval_points, 4 * EPS, steps=10) <= robust


def test_pgd_rejects_eps_outside_unit_interval(trained_model, eval_points):
    with pytest.raises(ConfigError, match="eps"):
        pgd_attack(trained_model, to_float(eval_points.x[:2]), eval_points.y[:2], 1.5)


def test_pgd_restores_training_mode_and_leaves_grads(trained_model, eval_points):
    trained_model.train()
    pgd_attack(trained_model, to_float(eval_points.x[:4]), eval_points.y[:4], EPS, steps=2)
    assert trained_model.training
    assert all(p.grad is None for p in trained_model.parameters())


def _check_autoattack(model, pts, eps):
    x, y = to_float(pts.x), pts.y
    saved = []
    res = autoattack(model, x, y, eps, on_attack_done=lambda name, st: saved.append(name))
    cascade = list(res.cascade.values())
    assert list(res.cascade) == ["clean", *STANDARD_ATTACKS] and saved == list(res.cascade)
    assert res.cascade["clean"] == pytest.approx(clean_accuracy(model, pts))
    assert all(b <= a for a, b in zip(cascade, cascade[1:]))  # a cascade never regains points
    assert res.robust_acc <= pgd_accuracy(model, pts, eps, steps=20)
    assert res.robust_acc < res.cascade["clean"]


def test_autoattack_at_most_pgd_on_same_points(trained_model, eval_points):
    # A large ball keeps the cascade short on CPU: few points survive APGD-CE.
    _check_autoattack(trained_model, eval_points.take(16), 2 * EPS)


@pytest.mark.slow
def test_autoattack_full_cascade_at_small_eps(trained_model, eval_points):
    _check_autoattack(trained_model, eval_points.take(48), EPS / 2)


def test_autoattack_resume_skips_finished_attacks(trained_model, eval_points):
    pts = eval_points.take(8)
    robust = torch.tensor([True, False] * 4)
    done = {"clean": 0.5, **{a: 0.5 for a in STANDARD_ATTACKS}}
    t0 = time.perf_counter()
    res = autoattack(trained_model, to_float(pts.x), pts.y, EPS, state=CascadeState(robust, dict(done)))
    assert time.perf_counter() - t0 < 5  # nothing was attacked again
    assert res.robust_acc == 0.5 and res.cascade == done


def test_parameter_attack_grows_with_lambda(trained_model, eval_points):
    before = {n: p.detach().clone() for n, p in trained_model.named_parameters()}
    clean = clean_accuracy(trained_model, eval_points)
    rows = parameter_attack(trained_model, eval_points, lams=(0.0, 0.02, 0.05, 0.1), steps=5)
    assert [r.lam for r in rows] == [0.0, 0.02, 0.05, 0.1]
    assert rows[0].acc_after == pytest.approx(clean) and rows[0].flipped == 0.0
    assert all(r.acc_before == pytest.approx(clean) for r in rows)
    accs = [r.acc_after for r in rows]
    assert all(b <= a for a, b in zip(accs, accs[1:]))
    assert accs[-1] < clean - 0.15  # a 10 % relative box breaks a standard-trained net
    assert rows[-1].flipped > 0.3
    assert all(torch.equal(p, before[n]) for n, p in trained_model.named_parameters())


def test_parameter_attack_stays_in_relative_box(trained_model, eval_points):
    theta = {n: p.detach().clone() for n, p in trained_model.named_parameters()}
    params, mask = attack_box(trained_model, theta, theta, 0.05, eval_points.take(32), steps=3)
    box = relative_box(theta, 0.05)
    for name, p in params.items():
        lo, hi = box[name]
        assert torch.all(p >= lo) and torch.all(p <= hi), name
    assert any(not torch.equal(params[n], theta[n]) for n in theta)  # it moved
    assert mask.dtype == torch.bool and mask.shape == (32,)


@pytest.mark.parametrize("kind", ["abs", "tanh"])
def test_neighbours_lie_inside_the_box(trained_model, kind):
    radius = RadiusConfig(kind=kind, lam=0.05)
    box = parameter_box(trained_model, radius)
    for mode in MODES:
        for i in range(3):
            net = sample_network(trained_model, box, mode, i, seed=1)
            for name, p in net.named_parameters():
                lo, hi = box[name]
                assert torch.all(p >= lo) and torch.all(p <= hi), (mode, name)
                if mode == "corner":
                    assert torch.all((p == lo) | (p == hi)), name
            moved = max((p - q).abs().max().item() for p, q in zip(net.parameters(), trained_model.parameters()))
            assert moved > 0


def test_neighbourhood_scores_and_summary(trained_model, eval_points):
    pts = eval_points.take(32)
    samples = neighbourhood(trained_model, pts, RadiusConfig("abs", lam=0.02), EPS, k=2, pgd_steps=3)
    assert sorted((s.mode, s.index) for s in samples) == [(m, i) for m in sorted(MODES) for i in (0, 1)]
    assert all(s.pgd_acc <= s.clean_acc for s in samples)
    summary = summarise(samples)
    uni = [s.clean_acc for s in samples if s.mode == "uniform"]
    assert summary["uniform"]["clean_acc"]["mean"] == pytest.approx(sum(uni) / 2)
    assert summary["uniform"]["clean_acc"]["spread"] == pytest.approx(max(uni) - min(uni))
    # The 2 % box keeps the networks close to the midpoint's accuracy.
    mid = clean_accuracy(trained_model, pts)
    assert all(abs(s.clean_acc - mid) <= 0.15 for s in samples)
