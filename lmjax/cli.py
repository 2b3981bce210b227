"""The `lmjax` command: train, eval, and the subcommands other modules register.

Bad input (lmjax.errors.LmjaxError) prints one line `lmjax: error: ...` and exits with 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from lmjax.errors import LmjaxError

# Modules that add subcommands: each has add_parser(subparsers) setting func=run(args) -> int.
_PLUGINS = ("lmjax.scaling.cli", "lmjax.sweep.cli", "lmjax.generate_cli", "lmjax.plan")


def split_overrides(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """Separate `--config.a.b=value` (or `--config.a.b value`) overrides from other arguments."""
    rest, overrides, i = [], {}, 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--config."):
            key = arg[len("--config."):]
            if "=" in key:
                key, value = key.split("=", 1)
            elif i + 1 < len(argv):
                i += 1
                value = argv[i]
            else:
                raise LmjaxError(f"override {arg} has no value")
            overrides[key] = value
        else:
            rest.append(arg)
        i += 1
    return rest, overrides


def load_cli_config(path: str, overrides: dict):
    from lmjax import config as config_lib

    cfg = config_lib.load_config_file(path)
    return config_lib.apply_overrides(cfg, overrides).validate()


def cmd_train(args) -> int:
    from lmjax.train.loop import train

    from lmjax.distributed import initialize

    cfg = load_cli_config(args.config, args.overrides)
    initialize(args.coordinator, args.num_processes, args.process_id)
    summary = train(cfg, args.workdir, force_new=args.force_new, announce=lambda m: print(m, file=sys.stderr))
    keys = ("status", "steps", "final_val_loss", "final_val_bpb", "final_val_ppl", "params_total", "wall_s")
    print(json.dumps({k: summary.get(k) for k in keys}))
    if summary.get("status") == "diverged":
        print(f"lmjax: error: training diverged (train loss {summary.get('final_train_loss')} at step "
              f"{summary.get('steps')}); lower optim.lr or set optim.clip_norm", file=sys.stderr)
        return 1
    return 0


def cmd_eval(args) -> int:
    from lmjax.evaluate import evaluate_run

    print(json.dumps(evaluate_run(args.workdir, by_position=args.by_position), indent=None))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmjax", description="Language-model scaling experiments in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train (or resume) one run",
                       epilog="Override any config field with --config.SECTION.FIELD=VALUE.")
    p.add_argument("--config", required=True, help="a configs/train/*.py file defining get_config()")
    p.add_argument("--workdir", required=True, help="the run directory")
    p.add_argument("--force-new", action="store_true",
                   help="start a new run even if WORKDIR holds one with another config (the old is moved aside)")
    g = p.add_argument_group("multi-process (otherwise detected from SLURM / TPU VM environments)")
    g.add_argument("--coordinator", help="host:port of process 0")
    g.add_argument("--num-processes", type=int)
    g.add_argument("--process-id", type=int)
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("eval", help="validation loss / bpb / perplexity of a run's latest checkpoint")
    p.add_argument("--workdir", required=True)
    p.add_argument("--by-position", action="store_true", help="also report the loss at each context position")
    p.set_defaults(func=cmd_eval)
    for name in _PLUGINS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and name.startswith(e.name):
                continue  # that part of lmjax is not present
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        rest, overrides = split_overrides(argv)
        parser = build_parser()
        args = parser.parse_args(rest)
        if overrides and args.command not in ("train", "plan"):
            raise LmjaxError(f"--config.* overrides apply to `lmjax train` and `lmjax plan`, not `lmjax {args.command}`")
        args.overrides = overrides
        from lmjax.jax_setup import setup_jax

        setup_jax()
        return args.func(args)
    except LmjaxError as e:
        print(f"lmjax: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lmjax: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
