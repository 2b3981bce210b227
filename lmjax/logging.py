"""Run logging: metrics.jsonl (one JSON object per log/eval step), wandb, a progress bar."""

from __future__ import annotations

import hashlib
import json
import math
import netrc
import os
import sys

METRICS = "metrics.jsonl"


def wandb_mode(setting: str) -> str:
    """auto -> online when an API key is configured (WANDB_API_KEY or ~/.netrc), else offline."""
    if setting != "auto":
        return setting
    if os.environ.get("WANDB_MODE") in ("offline", "disabled", "online"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        if netrc.netrc().authenticators("api.wandb.ai"):
            return "online"
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        pass
    return "offline"


def read_metrics(workdir: str) -> list[dict]:
    path = os.path.join(workdir, METRICS)
    if not os.path.isfile(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a line cut by a crash: everything after it is unreliable
    return out


def truncate_metrics(workdir: str, last_step: int) -> None:
    """Keep only records up to ``last_step`` (a resumed run re-logs what came after its checkpoint)."""
    path = os.path.join(workdir, METRICS)
    if not os.path.isfile(path):
        return
    keep = [r for r in read_metrics(workdir) if r.get("step", 0) <= last_step]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for r in keep:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def _read_grid(workdir: str) -> dict | None:
    from lmjax.train.rundir import GRID

    try:
        with open(os.path.join(workdir, GRID)) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def open_wandb(cfg, config_dict: dict, workdir: str):
    """The wandb run of a run directory: id from its path (a resumed run continues it), the sweep's
    group, and for a sweep run its grid coordinates under config["grid"] (to filter and group by)."""
    import wandb

    run_id = hashlib.sha256(os.path.abspath(workdir).encode()).hexdigest()[:12]
    grid = _read_grid(workdir)
    return wandb.init(project=cfg.log.wandb_project, group=cfg.log.wandb_group or None,
                      name=cfg.name or os.path.basename(os.path.abspath(workdir)), id=run_id, resume="allow",
                      dir=workdir, mode=wandb_mode(cfg.log.wandb),
                      config={**config_dict, **({"grid": grid} if grid else {})},
                      settings=wandb.Settings(silent=True, console="off"))


class RunLogger:
    """Writes metrics.jsonl; mirrors to wandb and a tqdm bar when enabled (process 0 only)."""

    def __init__(self, workdir: str, cfg, config_dict: dict, *, total_steps: int, start_step: int,
                 enabled: bool = True):
        self.enabled = enabled
        self.path = os.path.join(workdir, METRICS)
        self.wandb = None
        self.bar = None
        if not enabled:
            return
        mode = wandb_mode(cfg.log.wandb)
        if mode != "disabled":
            self.wandb = open_wandb(cfg, config_dict, workdir)
        if cfg.log.progress and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        record = {k: _clean(v) for k, v in record.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float))},
                           step=record["step"])
        if self.bar is not None:
            shown = {k: f"{record[k]:.4g}" for k in ("train_loss", "val_loss", "tokens_per_s") if k in record}
            self.bar.set_postfix(shown, refresh=False)
            self.bar.n = record["step"]
            self.bar.refresh()

    def advance(self, step: int) -> None:
        if self.bar is not None and step - self.bar.n >= 10:
            self.bar.n = step
            self.bar.refresh()

    def finish(self, summary: dict | None = None) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.wandb is not None:
            if summary:
                for k, v in summary.items():
                    if isinstance(v, (int, float, str)):
                        self.wandb.summary[k] = v
            self.wandb.finish()
