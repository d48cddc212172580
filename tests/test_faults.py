"""Bit errors in int8 weights: two's complement storage, exact random flips, the bit-flip attack beats random flips,
the statistical certificate collapses to the clean decision at p → 0, and `approp faults` is resumable."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from approp.certify.deploy import quantised_copy
from approp.certify.quantise import QuantSpec, predictions
from approp.certify.sources import Points
from approp.cli import app
from approp.config import ConfigError, ModelConfig
from approp.data import to_float
from approp.faults.bits import Int8Store, bit_flip_attack, flip_bits, margins, random_flips
from approp.faults.run import FaultsConfig, ber_accuracy, ber_certificate, run_faults
from approp.models import build_model
from mlp import train_mlp

pytest_plugins = ["trained"]


@pytest.fixture(scope="module")
def points(eval_points):
    return to_float(eval_points.x[:40]), eval_points.y[:40]


@pytest.fixture(scope="module")
def mlp(cifar_dir):
    """Returns the shared briefly trained MLP with a Tanh (no bound rule: faults need none)."""
    return train_mlp(cifar_dir, nn.Tanh, small_init=False)


def _planes(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    """Returns (8,) how many stored bits differ between the int8 tensors a and b, per bit plane."""
    xor = torch.cat([torch.bitwise_xor(u.view(torch.uint8), v.view(torch.uint8)).flatten() for u, v in zip(a, b)])
    return torch.stack([((xor.to(torch.int32) >> i) & 1).sum() for i in range(8)]).float()


def _bits_differing(a: list[torch.Tensor], b: list[torch.Tensor]) -> int:
    return int(_planes(a, b).sum())


def test_twos_complement_storage():
    q = torch.tensor([1, 0, -1, 127, -127], dtype=torch.int8)
    sign = torch.full((5,), 128, dtype=torch.uint8)
    assert flip_bits(q, sign).tolist() == [-127, -128, 127, -1, 1]
    assert flip_bits(q, torch.ones(5, dtype=torch.uint8)).tolist() == [0, 1, -2, 126, -128]


def test_store_is_the_deployed_int8_network(mlp, points):
    x, _ = points
    store = Int8Store(mlp)
    assert all(int(q.abs().max()) == 127 for q in store.stored())  # each channel's largest weight on ±127
    assert torch.equal(predictions(store.model, x), predictions(quantised_copy(mlp, QuantSpec()), x))
    assert store.bits() == 8 * (3072 * 32 + 32 * 10)


def test_random_flips_are_independent_bits_at_rate_p(mlp):
    """Flip counts match Binomial(8N, p) and spread evenly over the 8 bit planes; the xor has exactly k bits."""
    store = Int8Store(mlp)
    gen = torch.Generator().manual_seed(0)
    total, p = store.bits(), 2e-3
    counts, planes = [], torch.zeros(8)
    for _ in range(20):
        qs, k = random_flips(store.stored(), p, gen)
        per_plane = _planes(qs, store.stored())
        assert int(per_plane.sum()) == k  # every drawn flip landed on its own bit
        counts.append(k)
        planes += per_plane
    mean, sd = total * p, (total * p * (1 - p)) ** 0.5
    assert abs(sum(counts) / 20 - mean) < 4 * sd / 20**0.5
    share = planes / planes.sum()
    assert bool(((share - 1 / 8).abs() < 0.02).all())
    assert random_flips(store.stored(), 1e-12, gen)[1] == 0


def test_bit_flip_attack_beats_random_flips(mlp, points):
    """Ten attack flips raise the loss far more than ten random flips and cost accuracy; each flip changes exactly
    one stored bit."""
    x, y = points
    store = Int8Store(mlp)
    clean = [q.clone() for q in store.stored()]

    def loss() -> float:
        with torch.no_grad():
            return float(nn.functional.cross_entropy(store.model(x), y))

    before, loss_before = float((margins(store.model, x, y) > 0).float().mean()), loss()
    flips = bit_flip_attack(store, x, y, 10, lambda s: False)
    attacked, loss_attacked = float((margins(store.model, x, y) > 0).float().mean()), loss()
    assert len(flips) == 10 and _bits_differing(store.stored(), clean) == len(set(flips))
    assert attacked < before and loss_attacked > loss_before + 0.3
    gen = torch.Generator().manual_seed(0)
    drops = []
    for _ in range(5):
        positions = torch.randperm(store.bits(), generator=gen)[:10]
        qs = [q.clone() for q in clean]
        sizes = [q.numel() for q in clean]
        for pos in positions.tolist():
            bit, flat = divmod(pos, sum(sizes))
            li = 0 if flat < sizes[0] else 1
            idx = flat - (0 if li == 0 else sizes[0])
            mask = torch.zeros(sizes[li], dtype=torch.uint8)
            mask[idx] = 1 << bit
            qs[li] = flip_bits(qs[li], mask.view(qs[li].shape))
        store.load(qs)
        drops.append(loss() - loss_before)
    assert max(drops) < (loss_attacked - loss_before) / 5


def test_accuracy_and_certificate_at_vanishing_rate(mlp, points):
    """At p → 0 no bit flips: accuracy is the int8 network's, and the certificate certifies exactly its correct
    points (p(x) = 0) and refutes the others (p(x) = 1)."""
    x, y = points
    store = Int8Store(mlp)
    correct = margins(store.model, x, y) > 0
    acc = ber_accuracy(store, x, y, 1e-12, draws=3, seed=0)
    assert acc["acc"] == pytest.approx(correct.float().mean().item()) and acc["bits_flipped_mean"] == 0
    cert = ber_certificate(store, x[:20], y[:20], 1e-12, FaultsConfig(statistical=200, p0=0.2, delta=0.01))
    assert cert["certified_k"] == int(correct[:20].sum()) and cert["refuted"] == pytest.approx(
        1 - correct[:20].float().mean().item()
    )
    high = ber_accuracy(store, x, y, 0.3, draws=3, seed=0)  # every third bit flipped: no better than chance
    assert high["acc"] < 0.25 and high["lower"] <= high["acc"] <= high["upper"]


@pytest.mark.parametrize("arch", ["cnn4_bn", "cnn7"])
def test_any_architecture(arch):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch)).eval()
    store = Int8Store(model)
    x, y = torch.rand(4, 3, 32, 32), torch.arange(4)
    assert len(bit_flip_attack(store, x, y, 1, lambda s: False)) == 1


def test_faults_command_writes_table_and_plot_and_resumes(mlp, points, tmp_path):
    x, y = points
    torch.save(mlp, tmp_path / "mlp.pt")
    torch.save((x, y), tmp_path / "points.pt")
    args = [
        "faults",
        str(tmp_path / "mlp.pt"),
        "--data",
        str(tmp_path / "points.pt"),
        "--n",
        "40",
        "--ber",
        "1e-3,1e-2",
        "--draws",
        "3",
        "--bfa",
        "--bfa-cap",
        "5",
        "--bfa-points",
        "4",
        "--bfa-point-cap",
        "4",
        "--out",
        str(tmp_path / "out"),
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    out = tmp_path / "out"
    for name in ("faults.json", "faults.md", "faults_ber.csv", "faults_bfa.csv", "faults.png"):
        assert (out / name).stat().st_size > 0
    result = json.loads((out / "faults.json").read_text())
    assert list(result["stages"]) == ["ber:0.001", "ber:0.01", "bfa", "bfa_points"]
    assert len(result["stages"]["bfa"]["acc"]) == len(result["stages"]["bfa"]["flips"]) + 1
    # Resume: a finished stage is read back, not recomputed (its marked value survives the rerun) ...
    result["stages"]["ber:0.01"]["acc"] = 0.4321
    (out / "faults.json").write_text(json.dumps(result))
    assert CliRunner().invoke(app, args).exit_code == 0
    assert "43.2 [" in (out / "faults.md").read_text()
    # ... while other settings start over.
    assert CliRunner().invoke(app, [*args[:-2], "--draws", "2", "--out", str(out)]).exit_code == 0
    assert json.loads((out / "faults.json").read_text())["stages"]["ber:0.01"]["acc"] != 0.4321
    bad = CliRunner().invoke(app, ["faults", str(tmp_path / "mlp.pt"), "--ber", "2"])
    assert bad.exit_code == 1 and "(0, 1)" in bad.output


def test_config_is_checked():
    with pytest.raises(ConfigError):
        FaultsConfig(ber=(0.0,))
    with pytest.raises(ConfigError):
        FaultsConfig(draws=0)


def test_run_faults_on_points(mlp, points, tmp_path):
    """The library entry: a statistical stage per rate, and the stages listed in order."""
    x, y = points
    cfg = FaultsConfig(ber=(1e-4,), draws=2, statistical=64, p0=0.3, delta=0.05, bfa=False)
    result = run_faults(mlp, Points(x[:10], y[:10], "test"), cfg, tmp_path)
    assert list(result["stages"]) == ["ber:0.0001", "cert:0.0001"]
    assert result["stages"]["cert:0.0001"]["points"] == 10


def test_evaluate_stage(trained_run, cifar_dir, tmp_path):
    """The faults stage of `approp evaluate` writes RUN/faults/ and its line in the report; with the stage off the
    resume key is the one written before the stage existed."""
    import shutil

    from approp.evaluate import EvalConfig, Evaluator

    run = shutil.copytree(trained_run, tmp_path / "run")
    off = Evaluator(run, EvalConfig(n=16, autoattack=False), data_dir=cifar_dir, progress=False)
    assert not {"faults", "faults_bfa"} & set(off.key["config"])
    cfg = EvalConfig(n=16, pgd_steps=2, autoattack=False, verified=False, param_attack=(), faults=(1e-3,))
    res = Evaluator(run, cfg, data_dir=cifar_dir, progress=False).run()
    assert list(res["faults"]["stages"]) == ["ber:0.001"]
    assert (run / "faults" / "faults.md").is_file() and "Bit errors in the int8 weights" in (
        run / "report.md"
    ).read_text()


def test_comparison_decides_only_separated_intervals():
    """Accuracy differences count as decided only when the intervals do not overlap; per-point shares by
    Newcombe's interval."""
    from approp.faults.report import comparison_rows

    def result(acc: float, low: float, high: float, flipped_by_one: int) -> dict:
        stage = {"p": 1e-3, "acc": acc, "lower": low, "upper": high, "acc_min_draw": acc, "bits_flipped_mean": 1.0}
        per = {"points": list(range(50)), "cap": 8, "flips": [1] * flipped_by_one + [None] * (50 - flipped_by_one)}
        bfa = {"n": 100, "acc": [0.6, 0.1], "cap": 5, "flips_to_chance": 1}
        return {"stages": {"ber:0.001": stage, "bfa": bfa, "bfa_points": per}}

    rows = comparison_rows(
        {"a": result(0.6, 0.55, 0.65, 40), "b": result(0.5, 0.45, 0.56, 10), "c": result(0.59, 0.54, 0.64, 38)},
        [("a", "b"), ("a", "c")],
    )
    by = {(r["pair"], r["measure"]): r["decided"] for r in rows}
    assert by[("a − b", "accuracy at p = 0.001")] is False  # 0.55 < 0.56: the intervals overlap
    assert by[("a − b", "attacked points changed by 1 flip")] is True  # 80 % against 20 % of 50
    assert by[("a − c", "attacked points changed by 1 flip")] is False
