"""BatchNorm networks through every consumer: APP training, checkpoints, attacks, samplers, landscape, Julia.

Each consumer either handles BatchNorm (eval mode, running statistics, γ and β in the box)
or refuses it with an error that names the layer.
"""

import json

import numpy as np
import pytest
import torch
from torch import nn

from approp.attacks.parameter import parameter_attack
from approp.boxes import batched_logits, sampled_margins, stacked_uniform
from approp.checkpoint import META, load_model, save_checkpoint
from approp.config import ConfigError, ModelConfig, RadiusConfig, RunConfig
from approp.data import Split
from approp.julia.convert import UnsupportedByJuliaError, params_to_julia
from approp.julia.runner import check_julia_run
from approp.landscape import random_directions
from approp.models import build_model
from approp.neighbourhood import neighbourhood
from approp.radius import parameter_box
from approp.train.strategies import APP, step_context


def trained_bn(seed: int = 0) -> nn.Module:
    """Returns a cnn4_bn (IBP init) after a few train-mode forwards, so its running statistics moved."""
    torch.manual_seed(seed)
    model = build_model(ModelConfig("cnn4_bn", init="ibp")).train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(16, 3, 32, 32))
    return model.eval()


def tiny_split(n: int = 12, seed: int = 0) -> Split:
    gen = torch.Generator().manual_seed(seed)
    return Split(
        torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8),
        torch.randint(0, 10, (n,), generator=gen),
    )


class TestTraining:
    def test_app_step_on_cnn4_bn_uses_clean_statistics_and_trains(self):
        torch.manual_seed(0)
        model = build_model(ModelConfig("cnn4_bn", init="ibp")).train()
        cfg = RunConfig().replace(model={"arch": "cnn4_bn", "init": "ibp"}, train={"eps": 2 / 255, "kappa": 0.0})
        x, y = torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,))
        before = model.layers[2].num_batches_tracked.item()
        loss, logs = APP().loss(model, x, y, step_context(cfg, 1.0))
        assert model.layers[2].num_batches_tracked.item() == before + 1  # one clean forward, none in the bounds
        assert "clean_loss" in logs and torch.isfinite(loss)
        loss.backward()
        gamma = model.layers[2].weight.grad
        assert gamma is not None and gamma.abs().sum() > 0  # γ gets a gradient through the bounds


class TestCheckpoint:
    def test_running_statistics_round_trip(self, tmp_path):
        model = trained_bn()
        save_checkpoint(tmp_path, model, ModelConfig("cnn4_bn", init="ibp"), {"algo": "app", "epoch": 0})
        loaded, meta = load_model(tmp_path, expect=ModelConfig("cnn4_bn", init="ibp"))
        assert not loaded.training
        state, back = model.state_dict(), loaded.state_dict()
        assert set(state) == set(back)
        for name in ("layers.2.running_mean", "layers.2.running_var", "layers.17.running_mean"):
            assert torch.equal(state[name], back[name]), name
        assert back["layers.17.running_mean"].abs().sum() > 0  # moved from its initial zeros
        assert back["layers.2.num_batches_tracked"].dtype == torch.int64
        assert back["layers.2.num_batches_tracked"].item() == 3
        x = torch.rand(4, 3, 32, 32)
        assert torch.equal(model(x), loaded(x))

    def test_old_cnn4_checkpoint_without_init_still_loads(self, tmp_path):
        torch.manual_seed(1)
        model = build_model(ModelConfig()).eval()
        save_checkpoint(tmp_path, model, ModelConfig(), {"algo": "app", "epoch": 0})
        meta = json.loads((tmp_path / META).read_text())
        del meta["model"]["init"]  # written before model.init existed
        (tmp_path / META).write_text(json.dumps(meta))
        loaded, _ = load_model(tmp_path, expect=ModelConfig())
        x = torch.rand(2, 3, 32, 32)
        assert torch.equal(model(x), loaded(x))


class TestEvaluationConsumers:
    def test_parameter_attack_moves_gamma_beta_and_keeps_running_statistics(self):
        model = trained_bn()
        running = model.layers[2].running_mean.clone()
        rows = parameter_attack(model, tiny_split(), lams=(0.05,), steps=2, batch_size=12)
        assert len(rows) == 1 and 0 <= rows[0].acc_after <= rows[0].acc_before
        assert torch.equal(model.layers[2].running_mean, running) and not model.training

    def test_neighbourhood_samples_bn_networks_in_eval_mode(self):
        model = trained_bn()
        out = neighbourhood(
            model, tiny_split(8), RadiusConfig("abs", lam=0.01), eps=1 / 255, k=1, pgd_steps=1, batch_size=8
        )
        assert len(out) == 2 and all(0 <= s.clean_acc <= 1 for s in out)

    def test_statistical_sampler_runs_bn_under_vmap_and_matches_one_network(self):
        model = trained_bn()
        x, y = torch.rand(3, 3, 32, 32), torch.randint(0, 10, (3,))
        box = parameter_box(model, RadiusConfig("abs", lam=0.0))  # a point box: every draw is the model
        margins = sampled_margins(model, box, x, y, 0.0, 2, torch.Generator().manual_seed(0))
        z = model(x)
        own = nn.functional.one_hot(y, 10).bool()
        expect = z[own] - z.masked_fill(own, float("-inf")).amax(1)
        assert torch.allclose(margins, expect.expand(2, -1), atol=1e-5)

    def test_samplers_refuse_train_mode_batchnorm_by_name(self):
        model = trained_bn().train()
        params = stacked_uniform(parameter_box(model, RadiusConfig("abs", lam=0.01)), 2, torch.Generator())
        with pytest.raises(ValueError, match="BatchNorm layer 'layers.2' is in training mode"):
            batched_logits(model, params, torch.rand(2, 3, 3, 32, 32))

    def test_landscape_directions_leave_batchnorm_out(self):
        model = trained_bn()
        (d,) = random_directions(model, seed=0, count=1)
        for name, p in model.named_parameters():
            if p.dim() == 1:  # biases and BatchNorm's γ, β
                assert torch.equal(d[name], torch.zeros_like(p)), name
            else:
                assert d[name].abs().sum() > 0, name


class TestJulia:
    def test_converter_refuses_batchnorm_by_layer_name(self):
        params = {k: v.numpy() for k, v in trained_bn().state_dict().items()}
        with pytest.raises(UnsupportedByJuliaError, match=r"layers\.2, .*are BatchNorm layers"):
            params_to_julia(params)

    def test_converter_refuses_entries_cnn4_does_not_have(self):
        params = {k: v.detach().numpy() for k, v in build_model(ModelConfig()).state_dict().items()}
        params["layers.15.weight"] = np.zeros((2, 2), dtype=np.float32)
        with pytest.raises(UnsupportedByJuliaError, match="layers.15.weight"):
            params_to_julia(params)

    @pytest.mark.parametrize("arch", ["cnn4_bn", "cnn7"])
    def test_julia_run_refuses_other_architectures(self, arch):
        cfg = RunConfig().replace(model={"arch": arch}, train={"engine": "julia"})
        with pytest.raises(ConfigError, match=f"only model.arch 'cnn4'; got '{arch}'"):
            check_julia_run(cfg)
