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


def test_cache_note_suggests_the_smallest_accumulation_that_fits():
    from lmjax.plan import MIB, cache_note

    assert cache_note(20 * MIB, 32 * MIB, batch=12, accum=1, split=1) is None
    k, note = cache_note(50 * MIB, 32 * MIB, batch=12, accum=1, split=1)
    assert k == 2 and "(50.0 MiB) exceed the CPU cache (32 MiB)" in note and "grad_accum=2" in note
    # microbatches must still split over data x fsdp = 4: 12 / 2 = 6 does not, 12 / 3 = 4 does
    assert cache_note(50 * MIB, 32 * MIB, batch=12, accum=1, split=4)[0] == 3
    # 50 MiB measured at grad_accum 2 scales to 33 MiB at 3 and 25 MiB at 4 microbatches
    assert cache_note(50 * MIB, 26 * MIB, batch=12, accum=2, split=1)[0] == 4
    k, note = cache_note(50 * MIB, 1 * MIB, batch=4, accum=1, split=1)
    assert k is None and "try" not in note


def test_plan_compares_the_step_buffers_with_the_cpu_cache():
    from lmjax import config as config_lib
    from lmjax.plan import MIB, plan

    cfg = config_lib.apply_overrides(config_lib.load_config_file("configs/train/shakespeare_char.py"), {
        "data.tokenizer": "byte", "model.d_model": 32, "model.n_heads": 4, "model.n_layers": 1,
        "model.context": 16, "train.batch_size": 16, "train.grad_accum": 1, "mesh.shape": (8, 1, 1)})
    roomy = plan(cfg, cache_bytes=1024 * MIB)
    assert roomy["cpu_cache_mib"] == 1024 and "note" not in roomy
    temp_mib = roomy["memory_breakdown_gib"]["temporaries"] * 1024
    tight = plan(cfg, cache_bytes=int(temp_mib * MIB * 0.6))
    assert f"({temp_mib:.1f} MiB) exceed the CPU cache" in tight["note"]
    assert tight["suggested_grad_accum"] == 2  # 16 rows / 2 = 8 still split over 8 data devices
