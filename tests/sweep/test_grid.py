"""Grids, IsoFLOP designs, deterministic run names, sweep files, validation (no training)."""

import dataclasses

import pytest

from lmjax import models
from lmjax.config import Config, TrainConfig
from lmjax.models.recurrent import RecurrentConfig
from lmjax.models.transformer import TransformerConfig
from lmjax.sweep import cartesian, grid, isoflop, run_name, spec, validate
from lmjax.sweep.launcher import InvalidGrid, LaunchOptions, launch


def base():
    return Config(model=TransformerConfig(context=32, d_model=32, n_layers=2, n_heads=2),
                  train=TrainConfig(batch_size=8))


def ladder():
    return ([TransformerConfig(context=32, d_model=d, n_layers=2, n_heads=2) for d in (16, 32, 64)]
            + [RecurrentConfig(family="lstm", context=32, d_embed=h, d_hidden=h, n_layers=1) for h in (16, 32)])


def test_cartesian_product_and_coordinates():
    pts = cartesian(base(), models=ladder(), tokens=[8 * 32 * 10, 8 * 32 * 20], seeds=[0, 1], lrs=[1e-3, 3e-3],
                    axes={"optim.warmup_steps": [0, 5]})
    assert len(pts) == 5 * 2 * 2 * 2 * 2
    p = pts[0]
    assert p.coords["family"] == "transformer" and p.coords["steps"] == 10 and p.coords["tokens"] == 2560
    assert {q.config.train.steps for q in pts} == {10, 20}
    assert {q.coords["family"] for q in pts} == {"transformer", "lstm"}
    assert {q.config.optim.warmup_steps for q in pts} == {0, 5}
    names = [q.name for q in pts]
    assert len(set(names)) == len(names)


def test_per_size_learning_rate():
    pts = cartesian(base(), models=ladder()[:2], steps=[10], lrs=lambda m: [0.01 / m.d_model, 0.02 / m.d_model])
    assert [p.config.optim.lr for p in pts] == pytest.approx([0.01 / 16, 0.02 / 16, 0.01 / 32, 0.02 / 32])


def test_run_names_are_deterministic_and_ignore_neutral_fields():
    cfg = base()
    a = run_name(cfg)
    assert a == run_name(base()) and a.startswith("transformer-d32L2-t2000-lr0.001-s0-")
    neutral = dataclasses.replace(cfg, name="x", train=dataclasses.replace(cfg.train, eval_every=7, log_every=3))
    assert run_name(neutral) == a
    assert run_name(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=1))) != a
    assert run_name(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, use_bias=True))) != a


def test_fields_added_later_keep_existing_run_names_at_their_default():
    """Upgrading lmjax must not rename (and so re-train) the runs of an existing sweep. The name
    below was computed by lmjax at commit b97548b, before model.vocab_multiple existed."""
    cfg = base()
    assert run_name(cfg) == "transformer-d32L2-t2000-lr0.001-s0-72614981"
    padded = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_multiple=8))
    assert run_name(padded) != run_name(cfg)


def test_isoflop_matches_budget_within_2_percent():
    rejected = []
    budgets = [1e11, 3e11, 1e12]
    pts = isoflop(base(), budgets=budgets, models=ladder(), rejected=rejected)
    assert pts, "no point fits"
    for p in pts:
        cfg = p.config
        assert cfg.model.vocab_size == 65  # from the char tokenizer of the embedded corpus
        fpt = models.flops_per_token(cfg.model)
        achieved = cfg.train.steps * cfg.train.batch_size * cfg.model.context * fpt
        assert abs(achieved - p.coords["budget"]) / p.coords["budget"] <= 0.02
        assert p.coords["tokens"] == cfg.train.steps * 8 * 32
    # a budget too small for the largest model is rejected with a reason, not silently mis-sized
    tiny = []
    isoflop(base(), budgets=[1e8], models=ladder(), rejected=tiny)
    assert tiny and all("steps" in r.reason for r in tiny)
    fams = {p.coords["family"] for p in pts}
    assert fams == {"transformer", "lstm"}


def test_finalize_sets_names_groups_and_overrides(tmp_path, sweep_file):
    sw = spec.load_sweep(sweep_file(name="grp", lrs=(1e-3, 1e-3, 2e-3)))
    pts = spec.finalize(sw, {"train.steps": "12"})
    assert len(pts) == 2  # the duplicate point is dropped
    for p in pts:
        assert p.config.name == run_name(p.config) and p.config.train.steps == 12
        assert p.config.log.wandb_group == "grp"


def test_invalid_points_are_reported_and_nothing_starts(tmp_path, sweep_file):
    path = sweep_file(name="bad", widths=(16, 24), heads=3, lrs=(1e-3, 2e-3))  # 3 heads divide 24, not 16
    d = tmp_path / "sweepdir"
    with pytest.raises(InvalidGrid) as e:
        launch(path, str(d), LaunchOptions(backend="local"), report=lambda *a, **k: None)
    assert "n_heads=3 does not divide model.d_model=16" in str(e.value) and "d16L1" in str(e.value)
    assert not d.exists()
    # with --skip-invalid the valid points go ahead (a dry run here: nothing trains)
    out = launch(path, str(d), LaunchOptions(backend="local", skip_invalid=True, dry_run=True),
                 report=lambda *a, **k: None)
    assert out["runs"] == 2 and len(out["invalid"]) == 2  # 2 lrs of the bad width


def test_validate_checks_devices_and_hooks(sweep_file):
    pts = spec.finalize(spec.load_sweep(sweep_file(name="dev", batch=6, lrs=(1e-3, 2e-3))))
    assert validate.check(pts, devices_per_run=1) == {}
    problems = validate.check(pts, devices_per_run=4)
    assert all("batch_size=6 is not divisible" in " ".join(v) for v in problems.values())
    validate.HOOKS.append(lambda cfg: "too big for this machine" if cfg.optim.lr > 1.5e-3 else None)
    try:
        problems = validate.check(pts)
    finally:
        validate.HOOKS.pop()
    assert list(problems.values()) == [["too big for this machine"]]


def test_quickstart_grid_shape():
    from lmjax.sweep import quickstart_grid

    pts = spec.finalize(quickstart_grid.get_sweep())
    fams = {}
    for p in pts:
        fams.setdefault(p.coords["family"], set()).add((p.coords["size"], p.coords["tokens"]))
    assert set(fams) == {"transformer", "lstm"}
    for cells in fams.values():
        assert len({s for s, _ in cells}) >= 5 and len({t for _, t in cells}) >= 3
    assert validate.check(pts, devices_per_run=1) == {}


def test_training_flops_helper():
    cfg = dataclasses.replace(base(), model=dataclasses.replace(base().model, vocab_size=65),
                              train=dataclasses.replace(base().train, steps=10))
    assert grid.training_flops(cfg) == 10 * 8 * 32 * models.flops_per_token(cfg.model)


def test_package_functions_are_not_shadowed_by_submodules():
    import inspect

    import lmjax.sweep as sweep
    import lmjax.sweep.launcher  # noqa: F401
    import lmjax.sweep.results  # noqa: F401
    import lmjax.sweep.quickstart_grid  # noqa: F401

    for name in ("launch", "collect", "quickstart"):
        assert inspect.isfunction(getattr(sweep, name)), name


def test_wandb_runs_carry_the_sweep_group_and_grid_coordinates(tmp_path, sweep_file, monkeypatch):
    """Each run directory holds its grid coordinates (grid.json); its wandb run (offline here, a real
    wandb run object) has the sweep's group and the coordinates under config["grid"]."""
    import json
    import os

    from lmjax import config as config_lib
    from lmjax.logging import open_wandb
    from lmjax.sweep import store
    from lmjax.train import rundir

    monkeypatch.setenv("WANDB_MODE", "offline")
    pts = spec.finalize(spec.load_sweep(sweep_file(name="grp", lrs=(1e-3, 2e-3))), {"log.wandb": "offline"})
    d = str(tmp_path / "sw")
    store.record_sweep(d, "grp", pts, {"backend": "local"})
    p = pts[1]
    wd = store.run_dir(d, p.config.name)
    with open(os.path.join(wd, rundir.GRID)) as f:
        assert json.load(f) == dict(p.coords) and p.coords["lr"] == 2e-3
    run = open_wandb(p.config, config_lib.to_dict(p.config), wd)
    try:
        assert run.group == "grp" and run.config["grid"]["lr"] == 2e-3
        assert run.config["grid"]["size"] == p.coords["size"] and run.config["optim"]["lr"] == 2e-3
    finally:
        run.finish()


def test_isoflop_example_sweep_spends_each_budget():
    """configs/sweeps/isoflop_transformer.py: every run's logged training FLOPs are within 2% of
    its budget and every budget has at least 3 model sizes (an IsoFLOP profile needs them)."""
    import runpy
    from collections import Counter

    sweep = runpy.run_path("configs/sweeps/isoflop_transformer.py")["get_sweep"]()
    pts = spec.finalize(sweep)
    assert validate.check(pts, devices_per_run=1) == {}
    sizes = Counter(p.coords["budget"] for p in pts)
    assert len(sizes) == 3 and min(sizes.values()) >= 3
    for p in pts:
        assert abs(grid.training_flops(p.config) - p.coords["budget"]) <= 0.02 * p.coords["budget"]
        assert p.config.optim.decay_steps == p.config.train.steps  # each run decays to its own end
