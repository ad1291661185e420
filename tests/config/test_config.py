import pytest

from digitgan.config import Config, build_config, describe, preset
from digitgan.errors import ConfigError


def test_seed_preset_is_the_article_spec():
    cfg = preset("seed")
    assert cfg.model.arch == "mlp" and cfg.model.z_dim == 100
    assert cfg.model.mlp.g_hidden == [128] and cfg.model.mlp.d_hidden == [128]
    assert cfg.model.noise == "uniform" and cfg.model.init == "seed"
    assert cfg.loss.objective == "ns"
    assert (cfg.optim.lr_g, cfg.optim.lr_d) == (1e-3, 1e-3)
    assert (cfg.optim.beta1, cfg.optim.beta2, cfg.optim.eps) == (0.9, 0.999, 1e-8)
    assert cfg.data.batch_size == 128 and cfg.train.iters == 10_000 and cfg.train.d_steps == 1
    assert (cfg.log.sample_every, cfg.log.print_every, cfg.log.tb_every) == (1000, 1000, 100)
    assert cfg.log.grid_rows == 4


def test_set_overrides_parse_values_by_type(tmp_path):
    cfg = build_config(
        "seed",
        sets=[
            "optim.lr_g=2e-4",
            "model.mlp.g_hidden=[256, 256]",
            "log.histograms=false",
            "data.dataset=idx:/x",
        ],
    )
    assert cfg.optim.lr_g == 2e-4
    assert cfg.model.mlp.g_hidden == [256, 256]
    assert cfg.log.histograms is False
    assert cfg.data.dataset == "idx:/x"


def test_toml_file_then_set_then_flags(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[train]\niters = 50\nseed = 3\n[data]\nbatch_size = 32\n")
    cfg = build_config(None, f, ["train.seed=4"], {"data.batch_size": 16})
    assert (cfg.train.iters, cfg.train.seed, cfg.data.batch_size) == (50, 4, 16)


def test_round_trip_through_toml():
    cfg = build_config("seed", sets=["model.mlp.d_hidden=[64,32]", "train.iters=7"])
    import tomllib

    again = Config.from_dict(tomllib.loads(cfg.to_toml()))
    assert again == cfg


@pytest.mark.parametrize(
    "sets, message",
    [
        (["train.iters=-1"], "train.iters"),
        (["data.batch_size=0"], "data.batch_size"),
        (["data.batch_size=abc"], "data.batch_size: expected an integer"),
        (["model.noise=gaussian"], "model.noise: 'gaussian' is not one of"),
        (["model.arch=resnet9000"], "model.arch"),
        (["loss.objective=nope"], "loss.objective"),
        (["optim.beta1=1.5"], "optim.beta1"),
        (["model.mlp.g_hidden=[]"], "model.mlp.g_hidden: must not be empty"),
        (["train.device=tpu"], "train.device"),
        (["nosuch.key=1"], "unknown config key 'nosuch.key'"),
        (["train.nosuch=1"], "unknown config key 'train.nosuch'"),
        (["train.iters"], "expected section.key=value"),
        (["log.histograms=maybe"], "log.histograms: expected true or false"),
        (["augment.mode=flip"], "augment.mode: 'flip' is not one of none, diffaugment, ada"),
        (["augment.policy=['cutout','flip']"], "augment.policy: 'flip' is not one of"),
        (["augment.ada.target=1.5"], "augment.ada.target: 1.5 is above the maximum 1.0"),
        (
            ["augment.mode=ada", "loss.objective=wgan"],
            "augment.mode: ada reads D's overfitting from the sign of its logits, which only the "
            "ns, minimax, hinge objectives give a meaning, not wgan",
        ),
    ],
)
def test_bad_values_name_the_field(sets, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        build_config("seed", sets=sets)


def test_unknown_preset_and_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        build_config("nope")
    with pytest.raises(ConfigError, match="config file .*missing.toml: no such file"):
        build_config(None, tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\n")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        build_config(None, bad)
    section = tmp_path / "section.toml"
    section.write_text("[trian]\niters = 3\n")
    with pytest.raises(ConfigError, match=r"unknown section \[trian\]"):
        build_config(None, section)


def test_every_field_is_documented():
    rows = describe()
    assert len(rows) > 20
    assert all(help_text for *_, help_text in rows)
