"""The quickstart scaling study: Transformers and LSTMs on the embedded Tiny Shakespeare corpus.

5 model sizes per family x 3 training lengths (100k, 200k, 400k tokens) = 30 runs, sized to finish
in a few minutes on a 2-core laptop CPU with the local backend. The three lengths of one model size
train together as one vmapped group (one compiled program per size instead of three: on a small
CPU, XLA compilation costs more than these models' training), except the two largest Transformers:
XLA:CPU runs their vmapped (rank-5) attention 2-3x slower than three separate runs (measured here:
d_model 48 / 64 groups 114 / 145 s vs 56 / 63 s one by one; d_model 16 / 24 / 32 groups 20 / 18 /
31 s vs 41 / 40 / 45 s; see docs/sweeps.md). Each run still decays its own cosine schedule to its
own end (warmup 10%, floor lr / 10), as Chinchilla's fits assume, and evaluates 4 times on the
first 32k validation tokens. The LSTMs get a higher learning rate (1e-2 vs 3e-3), as small
recurrent models need.

wandb: the runs log to wandb (group "quickstart") when you are logged in or WANDB_MODE is set;
otherwise not at all (offline logs of 30 tiny runs would cost more than the runs).

    lmjax sweep launch configs/sweeps/quickstart.py --dir runs/quickstart --backend local
"""

from __future__ import annotations

import dataclasses
import os

from lmjax.config import Config, DataConfig, LogConfig, OptimConfig, TrainConfig
from lmjax.models.recurrent import RecurrentConfig
from lmjax.models.transformer import TransformerConfig
from lmjax.sweep.grid import cartesian, warmup_and_evals
from lmjax.sweep.spec import Sweep

CONTEXT = 64
BATCH = 16  # 1024 tokens per step
TOKENS = (100 * 1024, 200 * 1024, 400 * 1024)
TRANSFORMER_WIDTHS = (16, 24, 32, 48, 64)  # 2 layers, head dim 8
LSTM_WIDTHS = (16, 24, 32, 48, 64)  # 1 layer, d_embed = d_hidden, tied


def transformer_ladder() -> list[TransformerConfig]:
    return [TransformerConfig(context=CONTEXT, d_model=d, n_layers=2, n_heads=d // 8, positions="learned",
                              tied_embeddings=True, use_bias=False, dropout=0.0) for d in TRANSFORMER_WIDTHS]


def lstm_ladder() -> list[RecurrentConfig]:
    return [RecurrentConfig(family="lstm", context=CONTEXT, d_embed=h, d_hidden=h, n_layers=1, tied_embeddings=True)
            for h in LSTM_WIDTHS]


def wandb_setting() -> str:
    from lmjax.logging import wandb_mode

    mode = wandb_mode("auto")
    return mode if mode == "online" or os.environ.get("WANDB_MODE") else "disabled"


def base_config() -> Config:
    return Config(
        data=DataConfig(source="shakespeare", tokenizer="char"),
        optim=OptimConfig(lr=3e-3, schedule="cosine", min_lr=3e-4, b1=0.9, b2=0.99, weight_decay=0.1, clip_norm=1.0),
        train=TrainConfig(batch_size=BATCH, log_every=25, eval_batches=8, eval_batch_size=64, keep_checkpoints=1),
        log=LogConfig(wandb=wandb_setting(), wandb_project="lmjax-quickstart"),
    )


def learning_rate(model) -> float:
    return 1e-2 if model.family == "lstm" else 3e-3


def vmap_eligible(cfg: Config) -> bool:
    return cfg.model.family == "lstm" or cfg.model.d_model <= 32


def get_sweep() -> Sweep:
    schedule = warmup_and_evals(warmup_fraction=0.1, evals=4, checkpoints=2)

    def adjust(cfg: Config) -> Config:
        cfg = schedule(cfg)
        return dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, min_lr=cfg.optim.lr / 10))

    points = cartesian(base_config(), models=transformer_ladder() + lstm_ladder(), tokens=TOKENS,
                       lrs=learning_rate, adjust=adjust)
    return Sweep(points=points, name="quickstart", vmap=vmap_eligible,
                 description="Transformer and LSTM ladders x 3 data sizes on Tiny Shakespeare (char level)")
