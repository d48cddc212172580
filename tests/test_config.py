import pytest

from approp.config import ConfigError, DataConfig, RadiusConfig, RunConfig, TrainConfig, check_eps


class TestValidation:
    @pytest.mark.parametrize(
        "make, field",
        [
            (lambda: TrainConfig(eps=-0.1), "train.eps"),
            (lambda: TrainConfig(eps=1.5), "train.eps"),
            (lambda: TrainConfig(eps=float("nan")), "train.eps"),
            (lambda: RadiusConfig(lam=-1.0), "radius.lam"),
            (lambda: RadiusConfig(kind="relative"), "radius.kind"),
            (lambda: RadiusConfig(m=0.0), "radius.m"),
            (lambda: TrainConfig(algo="trades"), "train.algo"),
            (lambda: TrainConfig(kappa=1.2), "train.kappa"),
            (lambda: TrainConfig(epochs=0), "train.epochs"),
            (lambda: TrainConfig(device="tpu"), "train.device"),
            (lambda: DataConfig(subset=-5), "data.subset"),
        ],
    )
    def test_invalid_value_names_field(self, make, field):
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            make()

    def test_check_eps_bounds(self):
        check_eps(0.0)
        check_eps(1.0)
        with pytest.raises(ConfigError, match=r"\[0, 1\]"):
            check_eps(-1e-9)


class TestToml:
    def test_roundtrip(self, tmp_path):
        cfg = RunConfig().replace(train={"eps": 0.005, "algo": "standard"}, radius={"kind": "abs", "clamp": 1.0})
        cfg.save(tmp_path / "c.toml")
        assert RunConfig.load(tmp_path / "c.toml") == cfg

    def test_unknown_key_is_error(self, tmp_path):
        (tmp_path / "c.toml").write_text("[train]\nepsilon = 0.1\n")
        with pytest.raises(ConfigError, match="unknown key.*epsilon"):
            RunConfig.load(tmp_path / "c.toml")

    def test_unknown_section_is_error(self, tmp_path):
        (tmp_path / "c.toml").write_text("[trian]\neps = 0.1\n")
        with pytest.raises(ConfigError, match="trian"):
            RunConfig.load(tmp_path / "c.toml")

    def test_wrong_type_is_error(self, tmp_path):
        (tmp_path / "c.toml").write_text('[radius]\nlam = "big"\n')
        with pytest.raises(ConfigError, match="radius"):
            RunConfig.load(tmp_path / "c.toml")

    def test_malformed_file(self, tmp_path):
        (tmp_path / "c.toml").write_text("[train\n")
        with pytest.raises(ConfigError, match="not valid TOML"):
            RunConfig.load(tmp_path / "c.toml")
