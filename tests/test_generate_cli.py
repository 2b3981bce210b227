"""`lmjax sample` and `lmjax score` on tiny trained run directories (Transformer, LSTM, n-gram)."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from lmjax import config as config_lib
from lmjax.cli import main
from lmjax.generate import generate, load_bundle
from lmjax.scoring import score

TINY = {"train.batch_size": 8, "train.steps": 6, "train.log_every": 3, "train.eval_every": 0,
        "train.eval_batches": 1, "train.eval_batch_size": 8, "train.checkpoint_every": 0,
        "optim.warmup_steps": 2, "log.wandb": "disabled", "log.progress": False, "train.peak_flops": 1e11}
RUNS = {
    "transformer": ("configs/train/shakespeare_char.py",
                    {"model.d_model": 32, "model.n_layers": 1, "model.n_heads": 2, "model.context": 32}),
    "lstm": ("configs/train/shakespeare_char_lstm.py",
             {"model.d_embed": 16, "model.d_hidden": 16, "model.n_layers": 1, "model.context": 32}),
    "ngram": ("configs/train/shakespeare_char_ngram.py", {"model.order": 3}),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from lmjax.train.loop import train

    root = tmp_path_factory.mktemp("gen_cli")
    out = {}
    for family, (path, overrides) in RUNS.items():
        cfg = config_lib.apply_overrides(config_lib.load_config_file(path),
                                         {**TINY, **overrides} if family != "ngram" else
                                         {"log.wandb": "disabled", "log.progress": False, "train.eval_batches": 1,
                                          **overrides})
        out[family] = str(root / family)
        train(cfg, out[family], announce=lambda m: None)
    return out


def run_cli(capsys, *argv):
    rc = main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_sample_transformer_seeded_and_greedy(runs, capsys):
    wd = runs["transformer"]
    rc, out, err = run_cli(capsys, "sample", "--workdir", wd, "--prompt", "ROMEO:", "-n", "40", "--temperature",
                           "0.8", "--top-k", "10", "--top-p", "0.9", "--seed", "3")
    assert rc == 0, err
    assert out.startswith("ROMEO:") and len(out) == len("ROMEO:") + 40 + 1  # print adds a newline
    assert "40 tokens" in err
    rc, again, _ = run_cli(capsys, "sample", "--workdir", wd, "--prompt", "ROMEO:", "-n", "40", "--temperature",
                           "0.8", "--top-k", "10", "--top-p", "0.9", "--seed", "3")
    assert again == out
    # --greedy is the library's temperature 0; 40 > context - prompt: the window slides.
    rc, greedy, _ = run_cli(capsys, "sample", "--workdir", wd, "--prompt", "ROMEO:", "-n", "40", "--greedy",
                            "--json")
    data = json.loads(greedy)
    bundle = load_bundle(wd)
    ref = generate(bundle, "ROMEO:", 40, 0, temperature=0)
    assert data["samples"] == ref.texts(bundle.tokenizer) and data["settings"] == {"temperature": 0.0}


@pytest.mark.parametrize("family", ["lstm", "ngram"])
def test_sample_other_families(runs, capsys, family):
    rc, out, err = run_cli(capsys, "sample", "--workdir", runs[family], "--prompt", "KING", "-n", "25",
                           "--num-samples", "2", "--top-p", "0.95", "--json")
    assert rc == 0, err
    data = json.loads(out)
    assert data["family"] == family and len(data["samples"]) == 2
    assert all(len(s) == 25 for s in data["samples"])


def test_sample_end_token(runs, capsys):
    rc, out, err = run_cli(capsys, "sample", "--workdir", runs["ngram"], "--prompt", "KING", "-n", "200",
                           "--end", "\n", "--json", "--seed", "1")
    assert rc == 0, err
    (text,) = json.loads(out)["samples"]
    assert "\n" not in text[:-1] and (text.endswith("\n") or len(text) == 200)


@pytest.mark.parametrize("family", ["transformer", "lstm", "ngram"])
def test_score_json_matches_library(runs, capsys, family):
    text = "ROMEO: What light through yonder window breaks?"
    rc, out, err = run_cli(capsys, "score", "--workdir", runs[family], text, "--json")
    assert rc == 0, err
    data = json.loads(out)
    ref = score(load_bundle(runs[family]), text)
    assert data["total_logprob_nats"] == pytest.approx(ref.total_logprob_nats, rel=1e-6)
    assert data["n_scored"] == len(text) - 1 and len(data["tokens"]) == len(text) - 1
    assert data["perplexity"] == pytest.approx(np.exp(data["cross_entropy_nats"]))
    assert data["bits_per_byte"] == pytest.approx(data["cross_entropy_nats"] / np.log(2))
    assert [t["token"] for t in data["tokens"]] == list(text[1:])


def test_score_table(runs, capsys):
    rc, out, err = run_cli(capsys, "score", "--workdir", runs["lstm"], "Hark", "--context", "KING: ")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["pos", "id", "token", "logprob_nats", "prob"]
    assert len(lines) == 1 + 4 + 2
    assert lines[-2].startswith("total log-probability:") and "given the context" in lines[-2]
    assert "perplexity" in lines[-1] and "bits per byte" in lines[-1]


@pytest.fixture(scope="module")
def no_checkpoint(runs, tmp_path_factory):
    wd = tmp_path_factory.mktemp("nockpt") / "run"
    wd.mkdir()
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(os.path.join(runs["transformer"], name), wd / name)
    return str(wd)


@pytest.mark.parametrize("args, match", [
    (["--temperature", "0"], "--temperature must be > 0, got 0 (use --greedy"),
    (["--temperature", "-0.5"], "--temperature must be > 0"),
    (["--top-p", "0"], "--top-p must be in (0, 1], got 0"),
    (["--top-p", "1.5"], "--top-p must be in (0, 1], got 1.5"),
    (["--top-k", "0"], "--top-k must be >= 1"),
    (["--greedy", "--top-k", "3"], "--greedy takes no --top-k"),
    (["-n", "0"], "-n must be >= 1"),
    (["--prompt", "ROMÉO"], "--prompt: text has 1 character(s) outside the character vocabulary: 'É'"),
    (["--end", "ab"], "--end must be exactly one token"),
    (["WORKDIR", "missing"], "does not exist"),
    (["WORKDIR", "empty"], "holds no run"),
    (["WORKDIR", "no_checkpoint"], "has no checkpoint"),
])
def test_sample_bad_input_one_line(runs, no_checkpoint, tmp_path, capsys, args, match):
    wd = runs["transformer"]
    if args[0] == "WORKDIR":
        wd = {"missing": str(tmp_path / "nope"), "empty": str(tmp_path), "no_checkpoint": no_checkpoint}[args[1]]
        args = []
    rc, out, err = run_cli(capsys, "sample", "--workdir", wd, "-n", "5", *args)
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmjax: error: "), err
    assert match in lines[0], lines[0]


@pytest.mark.parametrize("args, match", [
    (["R"], "at least 2"),
    (["ROMÉO"], "outside the character vocabulary"),
    (["ROMEO", "--stride", "2"], "stride applies to window models"),
])
def test_score_bad_input_one_line(runs, capsys, args, match):
    rc, out, err = run_cli(capsys, "score", "--workdir", runs["lstm"], *args)
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmjax: error: ") and match in lines[0], err


def test_bundle_params_are_unsharded(runs):
    bundle = load_bundle(runs["transformer"])
    leaf = jax.tree.leaves(bundle.params)[0]
    assert len(leaf.sharding.device_set) == 1
