"""Configs: dotted overrides, errors naming the key, JSON round trip, the shipped config files."""

import glob
import json
import os

import pytest

from lmjax import config as config_lib
from lmjax.config import Config, DataConfig, MeshConfig, TrainConfig
from lmjax.errors import ConfigError
from lmjax.models.transformer import TransformerConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "train", "*.py")))


# ---------------------------------------------------------------- overrides

@pytest.mark.parametrize("key, raw, expected", [
    ("model.d_model", "256", 256),
    ("train.steps", "5000", 5000),
    ("train.steps", "1e3", 1000),  # an integral float is an int
    ("optim.lr", "3e-4", 3e-4),
    ("optim.lr", "1", 1.0),  # an int is a float
    ("model.dropout", "0.1", 0.1),
    ("log.progress", "false", False),
    ("log.progress", "False", False),
    ("data.stateful", "true", True),
    ("model.tied_embeddings", "False", False),
    ("data.source", "files:~/text/*.txt", "files:~/text/*.txt"),
    ("data.tokenizer", "bpe", "bpe"),
    ("model.positions", "rope", "rope"),
    ("name", "my-run", "my-run"),
    ("log.wandb_group", "'123'", "123"),  # quoted: a string even if it looks like a number
    ("mesh.shape", "(2, 2, 2)", (2, 2, 2)),
    ("mesh.shape", "[4,1,2]", (4, 1, 2)),
    ("mesh.shape", "-1,1,1", (-1, 1, 1)),
])
def test_dotted_override_parses_to_the_field_type(key, raw, expected):
    cfg = config_lib.override(Config(), key, raw)
    value = cfg
    for part in key.split("."):
        value = getattr(value, part)
    assert value == expected and type(value) is type(expected)
    if not isinstance(expected, str):  # a parsed (non-string) value works too
        assert config_lib.override(Config(), key, expected) == cfg


@pytest.mark.parametrize("key, raw", [("name", "2024"), ("log.wandb_group", "123"), ("data.spm_model", "1.5"),
                                      ("name", "None")])
def test_string_fields_take_the_text_as_is(key, raw):
    """`--config.name=2024` names the run "2024": a str field never sees the literal's int."""
    cfg = config_lib.override(Config(), key, raw)
    section, _, field = key.rpartition(".")
    assert getattr(getattr(cfg, section) if section else cfg, field) == raw


def test_override_leaves_everything_else_alone():
    base = Config()
    cfg = config_lib.override(base, "model.n_heads", "8")
    assert config_lib.diff(config_lib.to_dict(base), config_lib.to_dict(cfg)) == ["model.n_heads"]
    assert base.model.n_heads == 4  # frozen: the original is unchanged


def test_apply_overrides_in_order():
    cfg = config_lib.apply_overrides(Config(), {"train.steps": "10", "model.context": "32", "optim.lr": "0.01"})
    assert (cfg.train.steps, cfg.model.context, cfg.optim.lr) == (10, 32, 0.01)


@pytest.mark.parametrize("family", ["lstm", "gru", "rnn", "ffnn", "ngram", "transformer"])
def test_model_family_switch(family):
    base = config_lib.override(Config(), "model.context", "48")
    cfg = config_lib.override(base, "model.family", family)
    assert cfg.model.family == family
    assert type(cfg.model).__name__ != "TransformerConfig" or family == "transformer"
    assert cfg.model.context == 48  # the context carries over
    if family in ("lstm", "gru", "rnn"):
        cfg = config_lib.override(cfg, "model.d_hidden", "64")
        assert cfg.model.d_hidden == 64
        with pytest.raises(ConfigError, match="model.n_heads"):  # a transformer field is unknown now
            config_lib.override(cfg, "model.n_heads", "4")
    cfg.model.validate()


def test_unknown_family_is_a_config_error():
    with pytest.raises(ConfigError, match="'mamba'"):
        config_lib.override(Config(), "model.family", "mamba")


@pytest.mark.parametrize("key", ["model.d_modle", "train.stepz", "optimizer.lr", "data.source.path", "lr"])
def test_unknown_key_names_the_key(key):
    with pytest.raises(ConfigError, match="unknown config key") as e:
        config_lib.override(Config(), key, "1")
    assert key in str(e.value)


def test_setting_a_whole_section_is_a_config_error():
    with pytest.raises(ConfigError, match="'model'"):
        config_lib.override(Config(), "model", "{}")


@pytest.mark.parametrize("key, raw", [
    ("model.d_model", "abc"),
    ("model.d_model", "12.5"),
    ("train.steps", "true"),
    ("optim.lr", "fast"),
    ("log.progress", "maybe"),
    ("train.batch_size", "'8'"),
    ("mesh.shape", "8"),
])
def test_wrong_type_names_the_key(key, raw):
    with pytest.raises(ConfigError) as e:
        config_lib.override(Config(), key, raw)
    assert key in str(e.value)


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("key, raw, named", [
    ("model.n_heads", "3", "n_heads"),
    ("model.d_model", "0", "d_model"),
    ("train.steps", "0", "train.steps"),
    ("train.grad_accum", "5", "grad_accum"),
    ("optim.schedule", "linear", "optim.schedule"),
    ("data.val_fraction", "1.0", "val_fraction"),
    ("data.tokenizer", "wordpiece", "data.tokenizer"),
    ("mesh.shape", "(1, 1)", "mesh.shape"),
    ("log.wandb", "yes", "log.wandb"),
])
def test_validate_names_the_problem(key, raw, named):
    cfg = config_lib.override(Config(), key, raw)
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        cfg.validate()


# ---------------------------------------------------------------- JSON round trip

def _configs():
    yield Config()
    yield Config(model=TransformerConfig(d_model=64, n_heads=2, positions="rope"), name="x",
                 data=DataConfig(source="files:/tmp/*.txt", tokenizer="bpe", bpe_vocab_size=500),
                 train=TrainConfig(steps=10, batch_size=8), mesh=MeshConfig(shape=(2, 2, 2), rules="fsdp"))
    for family in ("lstm", "gru", "rnn", "ffnn", "ngram"):
        yield config_lib.override(Config(), "model.family", family)
    for path in TRAIN_CONFIGS:
        yield config_lib.load_config_file(path)


def test_to_dict_from_dict_round_trip():
    for cfg in _configs():
        d = config_lib.to_dict(cfg)
        text = json.dumps(d)  # plain JSON, as config.json stores it
        back = config_lib.from_dict(json.loads(text))
        assert back == cfg, cfg.name
        assert config_lib.to_dict(back) == d


def test_from_dict_unknown_keys_are_config_errors():
    d = config_lib.to_dict(Config())
    with pytest.raises(ConfigError, match="bogus"):
        config_lib.from_dict({**d, "bogus": 1})
    with pytest.raises(ConfigError, match="nope"):
        config_lib.from_dict({**d, "data": {**d["data"], "nope": 1}})
    with pytest.raises(ConfigError, match="d_modle"):
        config_lib.from_dict({**d, "model": {**d["model"], "d_modle": 1}})


def test_from_dict_wrong_types_are_config_errors():
    d = config_lib.to_dict(Config())
    with pytest.raises(ConfigError, match="train.steps"):
        config_lib.from_dict({**d, "train": {**d["train"], "steps": "ten"}})
    # the model section too (config.json of a run dir may be edited by hand)
    with pytest.raises(ConfigError, match="model.d_model"):
        config_lib.from_dict({**d, "model": {**d["model"], "d_model": "wide"}}).validate()


# ---------------------------------------------------------------- config files

def test_there_are_train_configs():
    assert any(p.endswith("shakespeare_char.py") for p in TRAIN_CONFIGS)


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=os.path.basename)
def test_train_config_file_loads_and_validates(path):
    cfg = config_lib.load_config_file(path)
    assert isinstance(cfg, Config)
    assert cfg.validate() is cfg
    assert config_lib.from_dict(config_lib.to_dict(cfg)) == cfg


def test_shakespeare_char_is_nanogpt_baby():
    cfg = config_lib.load_config_file(os.path.join(ROOT, "configs", "train", "shakespeare_char.py"))
    m = cfg.model
    assert (m.context, m.d_model, m.n_layers, m.n_heads, m.dropout) == (64, 128, 4, 4, 0.0)
    assert (cfg.data.source, cfg.data.tokenizer) == ("shakespeare", "char")
    assert (cfg.train.steps, cfg.train.batch_size, cfg.optim.lr) == (2000, 12, 1e-3)


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        config_lib.load_config_file(str(tmp_path / "missing.py"))
    (tmp_path / "none.py").write_text("x = 1\n")
    with pytest.raises(ConfigError, match="get_config"):
        config_lib.load_config_file(str(tmp_path / "none.py"))
    (tmp_path / "dict.py").write_text("def get_config():\n    return {'model': {}}\n")
    with pytest.raises(ConfigError, match="must return"):
        config_lib.load_config_file(str(tmp_path / "dict.py"))


# ---------------------------------------------------------------- trajectory_diff

@pytest.mark.parametrize("key, raw", [
    ("log.wandb", "disabled"), ("log.progress", "false"), ("log.wandb_project", "other"),
    ("mesh.shape", "(2, 2, 2)"), ("mesh.rules", "dp"), ("name", "renamed"),
    ("train.checkpoint_every", "7"), ("train.keep_checkpoints", "5"), ("train.log_every", "3"),
    ("train.eval_every", "9"), ("train.eval_batches", "2"), ("train.eval_batch_size", "8"),
    ("train.peak_flops", "1e12"),
])
def test_trajectory_diff_ignores_resume_neutral_keys(key, raw):
    old = config_lib.to_dict(Config())
    new = config_lib.to_dict(config_lib.override(Config(), key, raw))
    assert config_lib.diff(old, new) == [key]
    assert config_lib.trajectory_diff(old, new) == []


@pytest.mark.parametrize("key, raw", [
    ("optim.lr", "0.01"), ("model.d_model", "256"), ("train.steps", "10"), ("train.seed", "1"),
    ("train.batch_size", "24"), ("data.source", "files:x.txt"), ("data.tokenizer", "byte"),
    ("data.train_tokens", "1000"), ("train.grad_accum", "2"),
])
def test_trajectory_diff_reports_trajectory_keys(key, raw):
    old = config_lib.to_dict(Config())
    new = config_lib.to_dict(config_lib.override(Config(), key, raw))
    assert config_lib.trajectory_diff(old, new) == [key]


def test_trajectory_diff_model_family_change():
    old = config_lib.to_dict(Config())
    new = config_lib.to_dict(config_lib.override(Config(), "model.family", "lstm"))
    changed = config_lib.trajectory_diff(old, new)
    assert "model.family" in changed and "model.d_hidden" in changed and "model.n_heads" in changed
    mixed = config_lib.to_dict(config_lib.apply_overrides(Config(), {"log.wandb": "disabled", "optim.lr": "0.1"}))
    assert config_lib.trajectory_diff(old, mixed) == ["optim.lr"]


def test_trajectory_diff_reads_a_missing_added_field_as_its_default():
    new = config_lib.to_dict(Config())
    old = config_lib.to_dict(Config())
    del old["model"]["vocab_multiple"]  # written before the field existed
    assert config_lib.trajectory_diff(old, new) == []
    padded = config_lib.to_dict(config_lib.override(Config(), "model.vocab_multiple", "4"))
    assert config_lib.trajectory_diff(old, padded) == ["model.vocab_multiple"]
