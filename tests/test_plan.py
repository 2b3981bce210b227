"""`lmjax plan`: compiles without running and reports memory, FLOPs and fit."""

import json

from lmjax.cli import main

ARGS = ["plan", "--config", "configs/train/shakespeare_char.py", "--mesh", "2,2,2",
        "--config.data.tokenizer=byte", "--config.model.d_model=64", "--config.model.n_heads=4",
        "--config.model.n_layers=2", "--config.model.context=32", "--config.train.batch_size=8"]


def test_plan_reports_memory_and_flops(capsys):
    assert main(ARGS + ["--device-memory-gib", "16"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["devices"] == 8 and out["mesh"] == {"data": 2, "fsdp": 2, "tensor": 2}
    assert out["flops_per_step"] == out["flops_per_token"] * 8 * 32
    assert 0 < out["memory_per_device_gib"] < 16 and out["fits"] is True
    # arguments hold at least this device's share of params + two Adam moments (float32)
    share = 3 * out["params_total"] * 4 / 4 / 1024**3  # sharded 4 ways (fsdp x tensor) at most
    assert out["memory_breakdown_gib"]["arguments"] >= share * 0.9
    assert out["xla_flops_per_step_per_device"] > 0


def test_plan_says_when_it_does_not_fit(capsys):
    assert main(ARGS + ["--device-memory-gib", "1e-6"]) == 1
    assert json.loads(capsys.readouterr().out)["fits"] is False


def test_plan_bad_mesh_is_one_error_line(capsys):
    assert main(ARGS[:4] + ["3,1,1"] + ARGS[5:]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has 3 devices but 8 are available" in err[0]
