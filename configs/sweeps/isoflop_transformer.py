"""An IsoFLOP study (Chinchilla approach 2) on the embedded corpus: for each FLOP budget, a ladder of
Transformer sizes, each trained for the steps that spend the budget (within 2%, lmjax.sweep.isoflop),
with its cosine schedule decayed to its own end.

    lmjax sweep launch configs/sweeps/isoflop_transformer.py --dir runs/isoflop --backend local
    lmjax sweep collect runs/isoflop
    lmjax fit runs/isoflop --form chinchilla --plots runs/isoflop/plots   # approaches 1-3
"""

from __future__ import annotations

import dataclasses

from lmjax.sweep.grid import isoflop, warmup_and_evals
from lmjax.sweep.quickstart_grid import CONTEXT, base_config
from lmjax.sweep.spec import Sweep
from lmjax.models.transformer import TransformerConfig

BUDGETS = (1e11, 3e11, 1e12)  # FLOPs per run
WIDTHS = (16, 24, 32, 48, 64, 96)  # 2 layers, head dim 8


def get_sweep() -> Sweep:
    ladder = [TransformerConfig(context=CONTEXT, d_model=d, n_layers=2, n_heads=d // 8, positions="learned",
                                tied_embeddings=True, use_bias=False, dropout=0.0) for d in WIDTHS]
    schedule = warmup_and_evals(warmup_fraction=0.1, evals=4, checkpoints=2)

    def adjust(cfg):
        cfg = schedule(cfg)
        return dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, min_lr=cfg.optim.lr / 10))

    points = isoflop(base_config(), budgets=BUDGETS, models=ladder, lrs=3e-3, adjust=adjust)
    return Sweep(points=points, name="isoflop_transformer",
                 description="IsoFLOP profiles: 6 Transformer sizes x 3 FLOP budgets on Tiny Shakespeare")
