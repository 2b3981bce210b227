"""Bad input: one `lmjax: error:` line, exit status 2, and nothing already written is lost.

Runs `lmjax.cli.main` in-process (the 8 forced CPU devices of conftest) with a tiny model, and the
console script once in a subprocess. One real 2-step run is trained per module and copied into
each test that needs a run directory.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from lmjax import cli
from lmjax.data import sources

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "train", "shakespeare_char.py")
TINY = ["--config.model.d_model=16", "--config.model.n_layers=1", "--config.model.n_heads=2",
        "--config.model.context=16", "--config.train.steps=2", "--config.train.batch_size=8",
        "--config.train.eval_batches=1", "--config.train.eval_batch_size=8", "--config.train.log_every=1",
        "--config.train.peak_flops=1e12", "--config.log.wandb=disabled", "--config.log.progress=false"]


def train_args(workdir, corpus, cache, *extra):
    return ["train", "--config", CONFIG, "--workdir", str(workdir), *TINY,
            f"--config.data.source=files:{corpus}", f"--config.data.cache_dir={cache}", *extra]


def run(capsys, argv):
    """(exit status, stdout, stderr lines) of `lmjax ARGV` run in-process."""
    capsys.readouterr()
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err.splitlines()


def assert_one_error_line(rc, out, err, *needles):
    assert rc == 2, (rc, err)
    assert len(err) == 1, err
    assert err[0].startswith("lmjax: error: "), err
    for needle in needles:
        assert needle in err[0], (needle, err[0])
    assert out == ""


def snapshot(directory) -> dict[str, bytes]:
    files = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, directory)] = f.read()
    return files


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LMJAX_CACHE", str(tmp_path / "lmjax-cache"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(sources.embedded_text()[:20000], encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, corpus):
    """A finished 2-step run directory (trained once per module; tests copy it)."""
    base = tmp_path_factory.mktemp("trained")
    workdir = base / "run"
    rc = cli.main(train_args(workdir, corpus, base / "cache"))
    assert rc == 0
    assert {"config.json", "summary.json", "tokenizer.json", "metrics.jsonl"} <= set(os.listdir(workdir))
    assert os.listdir(workdir / "checkpoints")
    return workdir, base / "cache"


@pytest.fixture
def run_copy(tmp_path, trained_run):
    source, cache = trained_run
    workdir = tmp_path / "run"
    shutil.copytree(source, workdir)
    return workdir, cache


# ---------------------------------------------------------------- bad input, no run needed

# case -> (extra arguments given tmp_path, words the error line must contain)
BAD = {
    "unknown key": (lambda tmp: ["--config.model.d_modle=32"], ["model.d_modle"]),
    "unknown section": (lambda tmp: ["--config.optimiser.lr=0.1"], ["optimiser.lr"]),
    "wrong type": (lambda tmp: ["--config.train.steps=abc"], ["train.steps", "'abc'"]),
    "wrong bool": (lambda tmp: ["--config.log.progress=maybe"], ["log.progress"]),
    "n_heads": (lambda tmp: ["--config.model.n_heads=3"], ["n_heads=3", "d_model=16"]),
    "context longer than split": (lambda tmp: ["--config.model.context=4096"], ["context (4096)", "split"]),
    "context longer than train_tokens": (lambda tmp: ["--config.data.train_tokens=10"],
                                         ["context (16)", "training"]),
    "empty corpus": (lambda tmp: [f"--config.data.source=files:{tmp}/empty.txt"], ["empty", "empty.txt"]),
    "missing file": (lambda tmp: [f"--config.data.source=files:{tmp}/missing.txt"],
                     ["no files match", "missing.txt"]),
    "missing tfds": (lambda tmp: ["--config.data.source=tfds:lmjax_no_such_dataset",
                                  f"--config.data.tfds_data_dir={tmp}/tfds"],
                     ["lmjax_no_such_dataset", "not prepared"]),
    "bad tokenizer": (lambda tmp: ["--config.data.tokenizer=wordpiece"], ["data.tokenizer", "wordpiece"]),
    "missing spm model": (lambda tmp: ["--config.data.tokenizer=sentencepiece",
                                       f"--config.data.spm_model={tmp}/x.model"], ["x.model", "not found"]),
    "mesh shape": (lambda tmp: ["--config.mesh.shape=(3,1,1)"], ["mesh.shape", "(3, 1, 1)", "8"]),
    "mesh shape 2": (lambda tmp: ["--config.mesh.shape=(2,2,1)"], ["mesh.shape", "8"]),
    "override without value": (lambda tmp: ["--config.train.steps"], ["--config.train.steps"]),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_error_line(case, tmp_path, corpus, capsys):
    (tmp_path / "empty.txt").write_text(" \n\n")
    extra, needles = BAD[case]
    extra = extra(tmp_path)
    workdir = tmp_path / "run"
    rc, out, err = run(capsys, train_args(workdir, corpus, tmp_path / "cache", *extra))
    assert_one_error_line(rc, out, err, *needles)
    if not case.startswith("mesh"):  # (a bad mesh is found after the run dir is written; see below)
        assert not workdir.exists()


def test_missing_config_file(tmp_path, capsys):
    rc, out, err = run(capsys, ["train", "--config", tmp_path / "nope.py", "--workdir", tmp_path / "run"])
    assert_one_error_line(rc, out, err, "config file not found", "nope.py")


def test_eval_of_a_missing_run(tmp_path, capsys):
    rc, out, err = run(capsys, ["eval", "--workdir", tmp_path / "nothing"])
    assert_one_error_line(rc, out, err, "nothing")


def test_overrides_only_for_train(tmp_path, capsys):
    rc, out, err = run(capsys, ["eval", "--workdir", tmp_path, "--config.train.steps=3"])
    assert_one_error_line(rc, out, err, "--config")


# ---------------------------------------------------------------- a workdir holding a run

def test_same_config_finds_the_finished_run(run_copy, corpus, capsys):
    workdir, cache = run_copy
    before = snapshot(workdir)
    rc, out, err = run(capsys, train_args(workdir, corpus, cache))
    assert rc == 0
    assert json.loads(out)["status"] == "done" and json.loads(out)["steps"] == 2
    assert snapshot(workdir) == before


def test_a_run_written_before_a_config_field_existed_still_resumes(run_copy, corpus, capsys):
    """A field added later (here model.vocab_multiple) takes its default for an old run's config."""
    workdir, cache = run_copy
    saved = json.loads((workdir / "config.json").read_text())
    del saved["model"]["vocab_multiple"]
    (workdir / "config.json").write_text(json.dumps(saved))
    rc, out, err = run(capsys, train_args(workdir, corpus, cache))
    assert rc == 0 and json.loads(out)["status"] == "done", err
    rc, out, err = run(capsys, train_args(workdir, corpus, cache, "--config.model.vocab_multiple=4"))
    assert_one_error_line(rc, out, err, "different config", "model.vocab_multiple: 1 -> 4")


@pytest.mark.parametrize("change, named", [
    (["--config.optim.lr=0.01"], "optim.lr"),
    (["--config.train.seed=1", "--config.model.n_layers=2"], "train.seed"),
])
def test_different_config_is_refused_and_the_run_untouched(run_copy, corpus, capsys, change, named):
    workdir, cache = run_copy
    before = snapshot(workdir)
    rc, out, err = run(capsys, train_args(workdir, corpus, cache, *change))
    assert_one_error_line(rc, out, err, str(workdir), "different config", named, "--force-new")
    assert snapshot(workdir) == before
    assert not [p for p in os.listdir(workdir.parent) if ".old-" in p]


def test_different_corpus_is_refused_as_a_different_config(run_copy, tmp_path, capsys):
    """A new data.source must be reported as a config change, not as an error of the old vocabulary."""
    workdir, cache = run_copy
    other = tmp_path / "other.txt"
    other.write_text("Zebras quietly vex 0123456789 jumping fowl! @#$%\n" * 400)
    before = snapshot(workdir)
    rc, out, err = run(capsys, train_args(workdir, other, cache))
    assert_one_error_line(rc, out, err, "different config", "data.source")
    assert snapshot(workdir) == before


def test_bad_mesh_leaves_an_existing_run_untouched(run_copy, corpus, capsys):
    workdir, cache = run_copy
    summary = json.loads((workdir / "summary.json").read_text())
    summary["status"] = "preempted"  # an unfinished run: the command would resume it
    (workdir / "summary.json").write_text(json.dumps(summary))
    before = snapshot(workdir)
    rc, out, err = run(capsys, train_args(workdir, corpus, cache, "--config.mesh.shape=(3,1,1)"))
    assert_one_error_line(rc, out, err, "mesh.shape")
    assert snapshot(workdir) == before


def test_force_new_moves_the_old_run_aside_intact(run_copy, corpus, capsys):
    workdir, cache = run_copy
    before = snapshot(workdir)
    rc, out, err = run(capsys, train_args(workdir, corpus, cache, "--config.train.seed=1", "--force-new"))
    assert rc == 0, err
    assert json.loads(out)["status"] == "done"
    aside = [p for p in os.listdir(workdir.parent) if p.startswith("run.old-")]
    assert len(aside) == 1 and re.fullmatch(r"run\.old-\d{8}-\d{6}", aside[0]), aside
    assert snapshot(workdir.parent / aside[0]) == before  # every file of the old run, byte for byte
    assert any(aside[0] in line and "moved" in line for line in err)
    new_config = json.loads((workdir / "config.json").read_text())
    assert new_config["train"]["seed"] == 1
    assert json.loads(before["config.json"])["train"]["seed"] == 0
    assert json.loads((workdir / "summary.json").read_text())["status"] == "done"


# ---------------------------------------------------------------- the console script

def test_console_script_prints_one_error_line(tmp_path):
    script = os.path.join(os.path.dirname(sys.executable), "lmjax")
    cmd = [script] if os.path.exists(script) else [sys.executable, "-m", "lmjax"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "LMJAX_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(cmd + ["train", "--config", CONFIG, "--workdir", str(tmp_path / "run"),
                                 "--config.model.n_heads=3"],
                          capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert proc.returncode != 0
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("lmjax: error: ") and "n_heads=3" in lines[0]
    assert proc.stdout == ""
    assert not (tmp_path / "run").exists()
