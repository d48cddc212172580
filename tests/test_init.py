"""IBP initialisation (Shi et al. 2021): its statistics, what it leaves alone, and the initial bound width."""

import math

import pytest
import torch
from torch import nn

from approp.bounds import interval_bounds
from approp.config import ConfigError, ModelConfig
from approp.models import build_model, ibp_std

EPS = 2 / 255


def _build(arch: str, init: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelConfig(arch, init=init)).eval()


class TestStatistics:
    @pytest.mark.parametrize("arch", ["cnn4", "cnn4_bn"])
    def test_every_weight_but_the_last_has_sigma_sqrt_2pi_over_fan_in(self, arch):
        model = _build(arch, "ibp", seed=0)
        weights = [(n, p) for n, p in model.named_parameters() if p.dim() >= 2]
        for name, w in weights[:-1]:
            fan_in = w.shape[1] * math.prod(w.shape[2:])
            sigma = math.sqrt(2 * math.pi) / fan_in
            assert ibp_std(w) == pytest.approx(sigma)
            # sample std of n normal draws is within 4·σ/√(2n) of σ with overwhelming probability
            tol = 4 / math.sqrt(2 * w.numel())
            assert w.std().item() == pytest.approx(sigma, rel=tol), name
            assert abs(w.mean().item()) < 4 * sigma / math.sqrt(w.numel()), name

    def test_first_conv_fan_in_counts_the_kernel(self):
        conv = nn.Conv2d(3, 32, 3)
        assert ibp_std(conv.weight) == pytest.approx(math.sqrt(2 * math.pi) / 27)  # 3·3·3, as in Shi's manual_init

    @pytest.mark.parametrize("arch", ["cnn4", "cnn4_bn"])
    def test_last_layer_biases_and_batchnorm_untouched(self, arch):
        default, ibp = _build(arch, "default", seed=3), _build(arch, "ibp", seed=3)
        names = [n for n, p in default.named_parameters() if p.dim() >= 2]
        for (name, p), q in zip(default.named_parameters(), ibp.parameters()):
            changed = name in names[:-1]
            assert torch.equal(p, q) != changed, name
        bn = [m for m in ibp.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        assert len(bn) == (5 if arch == "cnn4_bn" else 0)
        for m in bn:
            assert torch.equal(m.weight, torch.ones_like(m.weight)) and torch.equal(m.bias, torch.zeros_like(m.bias))

    def test_init_is_validated(self):
        with pytest.raises(ConfigError, match="model.init"):
            ModelConfig(init="kaiming")


class TestBoundWidth:
    def test_cnn4_logit_radius_at_init_shrinks_by_three_orders_of_magnitude(self):
        """Measured (3 seeds, 8 images, ε = 2/255, no parameter box): default ≈ 800, IBP init ≈ 0.35."""
        x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        width = {}
        for init in ("default", "ibp"):
            width[init] = (
                sum(interval_bounds(_build("cnn4", init, s), x, EPS).radius.mean().item() for s in range(3)) / 3
            )
        ratio = width["default"] / width["ibp"]
        assert ratio > 1000, width  # measured ≈ 2300
        # Growth through the network: the input radius after normalisation is ε/std ≈ 0.032.
        input_radius = EPS / 0.25
        assert width["ibp"] / input_radius < 30  # stays within an order of magnitude or so
        assert width["default"] / input_radius > 10_000  # grows by about √fan_in per layer
