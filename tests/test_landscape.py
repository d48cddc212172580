"""Weight-loss landscape: filter-normalised directions, the same draw for every model, flatness, the plot."""

from __future__ import annotations

import json

import pytest
import torch

from approp.checkpoint import save_checkpoint
from approp.config import ModelConfig
from approp.data import Split
from approp.landscape import LandscapeConfig, compute_landscape, loss_at, plot_landscapes, random_directions
from approp.models import build_model


def model_with_seed(seed: int):
    torch.manual_seed(seed)
    return build_model(ModelConfig())


def random_split(n: int = 24) -> Split:
    gen = torch.Generator().manual_seed(0)
    return Split(
        torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8),
        torch.randint(0, 10, (n,), generator=gen),
    )


class TestDirections:
    def test_each_filter_has_the_norm_of_the_models_filter_and_biases_none(self):
        model = model_with_seed(1)
        (d,) = random_directions(model, seed=3, count=1)
        for name, p in model.named_parameters():
            if p.dim() < 2:
                assert torch.count_nonzero(d[name]) == 0, name
                continue
            dims = tuple(range(1, p.dim()))
            torch.testing.assert_close(
                torch.linalg.vector_norm(d[name], dim=dims), torch.linalg.vector_norm(p.detach(), dim=dims), msg=name
            )

    def test_same_seed_cuts_every_model_along_the_same_draw(self):
        a, b = model_with_seed(1), model_with_seed(2)
        da, db = random_directions(a, seed=7)[0], random_directions(b, seed=7)[0]
        w = "layers.1.weight"
        pa, pb = dict(a.named_parameters())[w].detach(), dict(b.named_parameters())[w].detach()
        # after undoing each model's filter norms the raw Gaussian directions coincide
        ua = da[w] / torch.linalg.vector_norm(pa, dim=(1, 2, 3), keepdim=True)
        ub = db[w] / torch.linalg.vector_norm(pb, dim=(1, 2, 3), keepdim=True)
        torch.testing.assert_close(ua, ub)
        assert not torch.allclose(random_directions(a, seed=8)[0][w], da[w])


class TestLandscape:
    def test_curve_passes_through_the_model_and_flatness_is_the_mean_increase(self):
        model, split = model_with_seed(0), random_split()
        cfg = LandscapeConfig(n=24, points=5, grid=3, span=0.4, step=0.2, seed=0, directions=1)
        ls = compute_landscape(model, split, cfg)
        base = {k: v.detach() for k, v in model.named_parameters()}
        assert ls.t == pytest.approx([-0.4, -0.2, 0.0, 0.2, 0.4])
        assert ls.loss_1d[2] == pytest.approx(loss_at(model, base, split), rel=1e-6)
        assert ls.loss_2d[1][1] == pytest.approx(ls.loss_0, rel=1e-6)  # grid centre (0, 0)
        assert ls.flatness == pytest.approx((ls.loss_1d[1] + ls.loss_1d[3]) / 2 - ls.loss_0, rel=1e-5)
        assert len(ls.loss_2d) == 3 and all(len(row) == 3 for row in ls.loss_2d)
        # a step of 40 % of every filter's norm moves the loss
        assert abs(ls.loss_1d[0] - ls.loss_0) > 1e-4

    def test_flatness_averages_directions_and_points_with_an_interval(self):
        model, split = model_with_seed(0), random_split()
        cfg = LandscapeConfig(n=24, points=3, grid=2, span=0.4, step=0.2, seed=0, directions=4)
        ls = compute_landscape(model, split, cfg)
        terms = torch.tensor(ls.flatness_terms, dtype=torch.float64)
        assert terms.shape == (4, 24)
        # Direction r's mean term is its own two-sided increase; flatness is their mean.
        base = {k: v.detach() for k, v in model.named_parameters()}
        dirs = random_directions(model, seed=0, count=5)
        for r, d in enumerate([dirs[0], *dirs[2:]]):
            moved = [{k: v + c * d[k] for k, v in base.items()} for c in (0.2, -0.2)]
            want = (loss_at(model, moved[0], split) + loss_at(model, moved[1], split)) / 2 - ls.loss_0
            assert terms[r].mean().item() == pytest.approx(want, rel=1e-3, abs=1e-6)
        assert ls.flatness == pytest.approx(terms.mean().item(), rel=1e-3, abs=1e-6)
        lo, hi = ls.flatness_interval
        assert lo < ls.flatness < hi
        # The first direction is the 1-D curve's: one direction gives the old number.
        one = compute_landscape(model, split, LandscapeConfig(n=24, points=3, grid=2, step=0.2, directions=1))
        assert one.flatness == pytest.approx(terms[0].mean().item(), rel=1e-3, abs=1e-6)

    def test_bad_direction_count_is_named(self):
        from approp.config import ConfigError

        with pytest.raises(ConfigError, match="landscape.directions"):
            LandscapeConfig(directions=0)

    def test_plot_and_cli_compare_runs_on_one_figure(self, cifar_dir, tmp_path):
        from typer.testing import CliRunner

        from approp.cli import app

        for i in range(2):
            save_checkpoint(
                tmp_path / f"run{i}",
                model_with_seed(i),
                ModelConfig(),
                {
                    "algo": "standard",
                    "radius": {"kind": "abs", "lam": 0.0},
                    "eps": 0.0,
                    "lam": 0.0,
                    "epoch": 0,
                    "epochs": 1,
                    "engine": "torch",
                },
            )
        png = tmp_path / "cmp.png"
        args = [
            "landscape",
            str(tmp_path / "run0"),
            str(tmp_path / "run1"),
            "--out",
            str(png),
            "--n",
            "16",
            "--points",
            "3",
            "--grid",
            "2",
            "--span",
            "0.2",
            "--directions",
            "3",
            "--data-dir",
            str(cifar_dir),
            "--quiet",
        ]
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, res.output
        printed = json.loads(res.output.strip().splitlines()[-1])
        flat = printed["flatness"]
        assert set(flat) == {"run0", "run1"} and png.stat().st_size > 10_000
        lo, hi = printed["flatness_interval"]["run0"]
        assert lo <= flat["run0"] <= hi
        cached = json.loads((tmp_path / "run0" / "landscape.json").read_text())
        assert cached["landscape"]["flatness"] == pytest.approx(flat["run0"])
        assert plot_landscapes(
            {"a": compute_landscape(model_with_seed(0), random_split(8), LandscapeConfig(n=8, points=3, grid=2))},
            tmp_path / "one.png",
        ).is_file()
