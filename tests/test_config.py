import pytest

from approp.config import (
    ConfigError,
    DataConfig,
    OptimConfig,
    RadiusConfig,
    RunConfig,
    TrainConfig,
    check_eps,
    parse_set,
)


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
            (lambda: TrainConfig(ramp="cosine"), "train.ramp"),
            (lambda: TrainConfig(kappa_schedule="linear"), "train.kappa_schedule"),
            (lambda: TrainConfig(reg_weight=-0.5), "train.reg_weight"),
            (lambda: TrainConfig(reg_tol=0.0), "train.reg_tol"),
            (lambda: TrainConfig(reg_tol=1.5), "train.reg_tol"),
            (lambda: OptimConfig(grad_clip=0.0), "optim.grad_clip"),
            (lambda: OptimConfig(grad_clip=float("inf")), "optim.grad_clip"),
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

    def test_roundtrip_of_the_recipe_fields(self, tmp_path):
        cfg = RunConfig().replace(
            train={"ramp": "smoothed", "kappa_schedule": "none", "reg_weight": 0.5, "reg_tol": 0.4},
            optim={"grad_clip": 10.0},
        )
        cfg.save(tmp_path / "c.toml")
        text = (tmp_path / "c.toml").read_text()
        assert 'ramp = "smoothed"' in text and "grad_clip = 10.0" in text
        assert RunConfig.load(tmp_path / "c.toml") == cfg

    def test_old_config_means_what_it_meant(self, tmp_path):
        # A config written before the recipe fields existed: linear ramp, κ from 1 to its
        # target over the ramp, no regularisers, no clipping.
        old = '[train]\nkappa = 0.95\nramp_epochs = 2\n[optim]\nname = "adam"\n'
        (tmp_path / "c.toml").write_text(old)
        cfg = RunConfig.load(tmp_path / "c.toml")
        t = cfg.train
        assert (t.ramp, t.kappa_schedule, t.reg_weight, cfg.optim.grad_clip) == ("linear", "gowal", 0.0, None)
        cfg.save(tmp_path / "again.toml")  # the resolved file still loads to the same config
        assert RunConfig.load(tmp_path / "again.toml") == cfg

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


class TestSet:
    """`--set section.key=value`: parsed by the field's declared type, checked by the dataclasses."""

    def test_values_take_the_declared_type(self):
        got = parse_set(
            [
                "model.width=2",
                "train.eps=2/255",
                "optim.lr=0.01",
                "optim.grad_clip=10",
                "train.margin_loss=yes",
                "data.augment=false",
                "data.subset=none",
                "radius.clamp=null",
                "train.ramp=smoothed",
                "train.device=cuda:1",
                "radius.bits=4",
                "radius.per_channel=off",
            ]
        )
        assert got == {
            "model": {"width": 2},
            "train": {"eps": 2 / 255, "margin_loss": True, "ramp": "smoothed", "device": "cuda:1"},
            "optim": {"lr": 0.01, "grad_clip": 10.0},
            "data": {"augment": False, "subset": None},
            "radius": {"clamp": None, "bits": 4, "per_channel": False},
        }
        assert type(got["model"]["width"]) is int and type(got["optim"]["grad_clip"]) is float

    def test_later_item_wins(self):
        assert parse_set(["train.epochs=3", "train.epochs=1"]) == {"train": {"epochs": 1}}

    def test_every_field_parses_its_own_default(self):
        # The parser knows every declared type: each field's default, written as text, reads back.
        for section, values in RunConfig().replace(data={"subset": 5}).to_dict().items():
            for key, value in values.items():
                text = str(value).lower() if isinstance(value, bool) else str(value)
                assert parse_set([f"{section}.{key}={text}"]) == {section: {key: value}}

    def test_none_unsets_what_a_file_set(self):
        cfg = RunConfig().replace(optim={"grad_clip": 10.0}, data={"subset": 64})
        cfg = cfg.replace(**parse_set(["optim.grad_clip=none", "data.subset=None"]))
        assert cfg.optim.grad_clip is None and cfg.data.subset is None

    @pytest.mark.parametrize(
        "item, message",
        [
            ("trian.eps=0.1", r"unknown config section 'trian'; known: model, data, radius, optim, train"),
            ("train.epsilon=0.1", r"unknown key 'epsilon' in \[train\]; known: algo, epochs, eps"),
            ("train.eps", r"SECTION\.KEY=VALUE"),
            ("train=0.1", r"SECTION\.KEY=VALUE"),
            (".eps=0.1", r"SECTION\.KEY=VALUE"),
            ("train.epochs=1.5", r"train\.epochs must be an integer; got '1\.5'"),
            ("train.epochs=none", r"train\.epochs must be an integer; got 'none'"),
            ("data.subset=all", r"data\.subset must be an integer or none"),
            ("train.eps=small", r"train\.eps must be a number"),
            ("train.eps=2/0", r"train\.eps must be a number"),
            ("train.margin_loss=maybe", r"train\.margin_loss must be true or false"),
            ("radius.kind=relative", r"radius\.kind must be one of 'abs', 'const', 'tanh', 'quant'"),
            ("train.precision=fp16", r"train\.precision must be one of"),
        ],
    )
    def test_bad_items_name_the_field_or_the_known_keys(self, item, message):
        with pytest.raises(ConfigError, match=message):
            parse_set([item])

    @pytest.mark.parametrize(
        "item, field",
        [("train.eps=2", "train.eps"), ("model.width=0", "model.width"), ("radius.lam=-1", "radius.lam")],
    )
    def test_ranges_are_checked_by_the_dataclasses(self, item, field):
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            RunConfig().replace(**parse_set([item]))
