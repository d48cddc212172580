"""Confidence intervals: known values from the literature and their coverage."""

import math

import pytest
import torch

from approp.stats.intervals import Estimate, crossed_bootstrap, decided, difference, format_pct, from_share, wilson
from approp.stats.paired import paired_counts_difference, paired_difference, table


class TestWilson:
    def test_known_values(self):
        # Newcombe (1998), Statistics in Medicine 17:857, table I: 81/263 -> 0.2553 to 0.3662,
        # 15/148 -> 0.0624 to 0.1605, 0/20 -> 0 to 0.1611, 1/29 -> 0.0061 to 0.1718.
        for k, n, lo, hi in [
            (81, 263, 0.2553, 0.3662),
            (15, 148, 0.0624, 0.1605),
            (0, 20, 0.0, 0.1611),
            (1, 29, 0.0061, 0.1718),
        ]:
            p = wilson(k, n)
            assert p.lower == pytest.approx(lo, abs=1e-4) and p.upper == pytest.approx(hi, abs=1e-4)

    def test_ends_and_errors(self):
        assert wilson(0, 10).lower == 0.0 and wilson(10, 10).upper == 1.0
        assert (wilson(0, 0).lower, wilson(0, 0).upper) == (0.0, 1.0)
        with pytest.raises(ValueError):
            wilson(11, 10)
        assert from_share(0.5, 1000).k == 500

    def test_coverage_is_near_nominal(self):
        # 2,000 binomial draws at n = 200, p = 0.3: the 95 % interval must cover p about 95 % of the time.
        gen = torch.Generator().manual_seed(0)
        ks = torch.binomial(torch.full((2000,), 200.0), torch.full((2000,), 0.3), generator=gen)
        covered = sum(wilson(int(k), 200).lower <= 0.3 <= wilson(int(k), 200).upper for k in ks)
        assert 0.93 <= covered / 2000 <= 0.97


class TestDifference:
    def test_newcombe_known_value(self):
        # Newcombe (1998), Statistics in Medicine 17:873, method 10: 56/70 − 48/80 -> 0.0524 to 0.3339.
        d, lo, hi = difference(wilson(56, 70), wilson(48, 80))
        assert d == pytest.approx(0.2) and lo == pytest.approx(0.0524, abs=1e-4)
        assert hi == pytest.approx(0.3339, abs=1e-4)
        assert decided(wilson(56, 70), wilson(48, 80))

    def test_undecided_when_intervals_overlap_zero(self):
        assert not decided(wilson(300, 500), wilson(310, 500))
        assert decided(wilson(700, 1000), wilson(600, 1000))
        assert not decided(wilson(5, 10), wilson(5, 10))

    def test_format(self):
        assert format_pct(0.5, 0.25, 0.75) == "50.0 [25.0, 75.0]"
        assert str(wilson(1, 2)).startswith("50.0 [") and not math.isnan(wilson(1, 2).value)


class TestCrossedBootstrap:
    def test_a_constant_matrix_has_no_uncertainty(self):
        lo, hi = crossed_bootstrap(torch.full((5, 40), 0.25))
        assert lo == pytest.approx(0.25) and hi == pytest.approx(0.25)

    def test_one_row_is_the_points_bootstrap(self):
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(1, 2000, generator=gen, dtype=torch.float64)
        lo, hi = crossed_bootstrap(x)
        half = 1.96 * x.std().item() / math.sqrt(x.shape[1])
        assert lo == pytest.approx(x.mean().item() - half, abs=0.15 * half)
        assert hi == pytest.approx(x.mean().item() + half, abs=0.15 * half)

    def test_covers_the_mean_of_a_crossed_design(self):
        """Rows (directions) and columns (points) each add a random effect: the interval must cover
        the true mean 0 about 95 % of the time (the pigeonhole bootstrap is slightly conservative)."""
        gen = torch.Generator().manual_seed(1)
        covered, trials = 0, 200
        for trial in range(trials):
            rows = torch.randn(8, 1, generator=gen, dtype=torch.float64)
            cols = torch.randn(1, 100, generator=gen, dtype=torch.float64)
            noise = 0.5 * torch.randn(8, 100, generator=gen, dtype=torch.float64)
            lo, hi = crossed_bootstrap(rows + cols + noise, reps=1000, seed=trial)
            covered += lo <= 0.0 <= hi
        # 95 % nominal; with 8 rows the percentile interval runs a little short. Below 86 % would be a defect.
        assert covered / trials >= 0.86

    def test_bad_shapes_are_named(self):
        with pytest.raises(ValueError, match="matrix"):
            crossed_bootstrap(torch.zeros(3))
        with pytest.raises(ValueError, match="matrix"):
            crossed_bootstrap(torch.zeros(0, 4))

    def test_estimate_prints_value_and_interval(self):
        assert str(Estimate(0.0092, 0.0081, 0.0104)) == "0.0092 [0.0081, 0.0104]"


class TestPaired:
    def test_known_value(self):
        # Fagerland, Lydersen & Laake (2017), Statistical Analysis of Contingency Tables, ch. 8: Cavo et al.
        # (2012), table [[59, 6], [16, 80]] -> Newcombe square-and-add −0.0621 (−0.1186 to −0.0046).
        d, lo, hi = paired_counts_difference(59, 6, 16, 80)
        assert d == pytest.approx(-0.0621, abs=1e-4)
        assert lo == pytest.approx(-0.1186, abs=1e-4) and hi == pytest.approx(-0.0046, abs=1e-4)

    def test_no_association_gives_the_independent_interval(self):
        # n11·n00 = n10·n01: φ = 0, so the paired interval is Newcombe's independent one.
        d, lo, hi = paired_counts_difference(40, 20, 10, 5)
        assert (d, lo, hi) == pytest.approx(difference(wilson(60, 75), wilson(50, 75)))

    def test_masks_give_the_table_and_reject_other_points(self):
        a = torch.tensor([1, 1, 0, 0, 1], dtype=torch.bool)
        b = torch.tensor([1, 0, 1, 0, 0], dtype=torch.bool)
        assert table(a, b) == (1, 2, 1, 1)
        assert paired_difference(a, b) == paired_counts_difference(1, 2, 1, 1)
        with pytest.raises(ValueError, match="same points"):
            table(a, b[:4])
        with pytest.raises(ValueError):
            paired_counts_difference(1, -1, 0, 0)

    def test_positive_correlation_narrows_the_interval(self):
        # Two models right on mostly the same points: the independent interval wastes the pairing.
        d, lo, hi = paired_counts_difference(600, 40, 10, 350)
        di, loi, hii = difference(wilson(640, 1000), wilson(610, 1000))
        assert d == pytest.approx(di) and hi - lo < 0.5 * (hii - loi)
        assert lo > 0 and loi < 0  # decided paired, undecided independent

    def test_coverage_of_correlated_outcomes(self):
        """Per point a shared difficulty decides both models' outcomes (positively correlated, true
        difference +0.03): the 95 % interval must cover it at least about 95 % of the time."""
        gen = torch.Generator().manual_seed(2)
        n, trials, covered = 300, 1000, 0
        for _ in range(trials):
            u = torch.rand(n, generator=gen)  # each point's difficulty
            v = torch.rand(n, generator=gen)
            a = u < 0.70
            b = torch.where(v < 0.8, u < 0.67, torch.rand(n, generator=gen) < 0.67)  # correlated, P(b) = 0.67
            _, lo, hi = paired_difference(a, b)
            covered += lo <= 0.03 <= hi
        assert covered / trials >= 0.93
