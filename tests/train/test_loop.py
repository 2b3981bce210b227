"""One short run end to end: run-directory files, metrics, eval CLI, wandb offline, schedules."""

import json
import math
import os

import numpy as np
import pytest

from lmjax import config as config_lib
from lmjax.cli import main
from lmjax.config import OptimConfig
from lmjax.train.optim import decay_mask, schedule

TINY = {"model.d_model": 32, "model.n_layers": 1, "model.n_heads": 2, "model.context": 32,
        "train.batch_size": 8, "train.steps": 40, "train.log_every": 10, "train.eval_every": 20,
        "train.eval_batches": 4, "train.checkpoint_every": 20, "optim.warmup_steps": 5, "mesh.shape": (4, 2, 1),
        "log.wandb": "offline", "train.peak_flops": 1e11}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from lmjax.train.loop import train

    cfg = config_lib.apply_overrides(config_lib.load_config_file("configs/train/shakespeare_char.py"), TINY)
    workdir = str(tmp_path_factory.mktemp("loop") / "run")
    summary = train(cfg, workdir)
    return workdir, summary


def test_run_directory_files(run_dir):
    workdir, summary = run_dir
    for name in ("config.json", "metrics.jsonl", "summary.json", "tokenizer.json", "checkpoints"):
        assert os.path.exists(os.path.join(workdir, name)), name
    saved = json.load(open(os.path.join(workdir, "config.json")))
    assert saved["model"]["vocab_size"] == 65  # resolved from the character vocabulary
    assert config_lib.from_dict(saved).model.d_model == 32
    for key in ("final_val_loss", "final_val_bpb", "steps", "tokens", "flops", "params_total",
                "params_non_embedding", "wall_s", "status"):
        assert key in summary, key
    assert summary["status"] == "done" and summary["steps"] == 40
    assert summary["tokens"] == 40 * 8 * 32
    assert summary["flops"] == pytest.approx(summary["tokens"] * summary["flops_per_token"])
    # character level: one byte per token, so bpb = loss / ln 2
    assert summary["final_val_bpb"] == pytest.approx(summary["final_val_loss"] / math.log(2))
    assert summary["final_val_loss"] < math.log(65)  # it learned something


def test_metrics_records(run_dir):
    workdir, _ = run_dir
    recs = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [r["step"] for r in recs] == [10, 20, 30, 40]
    for r in recs:
        for key in ("train_loss", "lr", "grad_norm", "tokens", "flops", "tokens_per_s", "mfu", "wall_s"):
            assert key in r and np.isfinite(r[key]), key
        assert r["tokens"] == r["step"] * 8 * 32
    evals = [r for r in recs if "val_loss" in r]
    assert [r["step"] for r in evals] == [20, 40]
    assert all(k in evals[0] for k in ("val_bpb", "val_ppl"))
    assert evals[1]["val_ppl"] == pytest.approx(math.exp(evals[1]["val_loss"]))
    # the learning rate follows the schedule
    sched = schedule(OptimConfig(lr=1e-3, warmup_steps=5, decay_steps=2000, min_lr=1e-4), 40)
    assert recs[0]["lr"] == pytest.approx(float(sched(9)), rel=1e-6)


def test_eval_cli_matches_summary(run_dir, capsys):
    workdir, summary = run_dir
    assert main(["eval", "--workdir", workdir, "--by-position"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["step"] == 40
    assert out["val_loss"] == pytest.approx(summary["final_val_loss"], rel=1e-5)
    by_pos = out["loss_by_position"]
    assert len(by_pos) == 32
    # every position counts equally often except the padded tail, so the mean is close to the loss
    assert np.mean(by_pos) == pytest.approx(out["val_loss"], rel=0.02)


def test_wandb_offline_run_written(run_dir):
    workdir, _ = run_dir
    wandb_dir = os.path.join(workdir, "wandb")
    assert os.path.isdir(wandb_dir)
    assert any(d.startswith("offline-run-") for d in os.listdir(wandb_dir))


def closed_form_cosine(step, lr, warm, decay, floor):
    if step < warm:
        return lr * (step + 1) / warm
    ratio = min(max((step - warm) / (decay - warm), 0.0), 1.0)
    return floor + 0.5 * (1 + math.cos(math.pi * ratio)) * (lr - floor)


def test_schedules_closed_form():
    o = OptimConfig(lr=1e-3, warmup_steps=100, decay_steps=2000, min_lr=1e-4)
    s = schedule(o, 2000)
    for step in (0, 50, 99, 100, 500, 1999, 2000, 2500):
        assert float(s(step)) == pytest.approx(closed_form_cosine(step, 1e-3, 100, 2000, 1e-4), rel=1e-5)
    c = schedule(OptimConfig(lr=3e-4, schedule="constant", warmup_steps=10), 100)
    assert float(c(0)) == pytest.approx(0.0) and float(c(50)) == pytest.approx(3e-4)
    w = schedule(OptimConfig(lr=1e-3, schedule="wsd", warmup_steps=10, min_lr=0.0, wsd_decay_fraction=0.2), 100)
    assert float(w(50)) == pytest.approx(1e-3)  # stable phase
    assert float(w(80)) == pytest.approx(1e-3)  # decay starts at 80
    assert float(w(90)) == pytest.approx(5e-4, rel=1e-5)  # linear to the floor
    assert float(w(100)) == pytest.approx(0.0, abs=1e-9)


def test_weight_decay_mask():
    params = {"embed": {"embedding": np.zeros((5, 4))}, "pos_embed": np.zeros((3, 4)),
              "layer_0": {"mlp": {"up": {"kernel": np.zeros((4, 8)), "bias": np.zeros(8)}},
                          "norm_attn": {"scale": np.zeros(4)}}}
    m = decay_mask(params, decay_embeddings=False)
    assert m["layer_0"]["mlp"]["up"]["kernel"] and not m["layer_0"]["mlp"]["up"]["bias"]
    assert not m["layer_0"]["norm_attn"]["scale"] and not m["embed"]["embedding"] and not m["pos_embed"]
    assert decay_mask(params, decay_embeddings=True)["embed"]["embedding"]


def test_diverging_run_stops_at_the_first_non_finite_log_and_exits_nonzero(tmp_path, capsys):
    """lr 1e4 blows the parameters up: the run stops at the first logged non-finite loss (not after
    all 200 steps), keeps only checkpoints from before, and the CLI prints one error line, exit 1."""
    workdir = tmp_path / "run"
    over = {**TINY, "train.steps": 200, "train.log_every": 5, "train.checkpoint_every": 100,
            "train.eval_every": 0, "optim.lr": 1e4, "optim.clip_norm": 0.0,
            "log.wandb": "disabled"}
    rc = main(["train", "--config", "configs/train/shakespeare_char.py", "--workdir", str(workdir),
               *[f"--config.{k}={v}".replace(" ", "") for k, v in over.items()]])
    assert rc == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lmjax: error:")]
    assert len(err) == 1 and "diverged" in err[0]
    summary = json.load(open(workdir / "summary.json"))
    assert summary["status"] == "diverged" and summary["steps"] < 100
    assert not math.isfinite(summary["final_train_loss"])
    assert not os.listdir(workdir / "checkpoints")  # nothing saved from the diverged state
    records = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    assert records[-1]["step"] == summary["steps"] and records[-1]["train_loss"] in ("nan", "inf", "-inf")
