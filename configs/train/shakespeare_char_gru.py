"""GRU on characters of Tiny Shakespeare with the Transformer baseline's data, batch and step budget.

2 layers of 216 units (d_embed 216, untied softmax; 0.78M parameters for the LSTM), context
64, batch 12, 2000 steps, AdamW with peak lr 2e-3, 100 warmup steps, cosine to 1e-4.
"""

from lmjax.config import Config, DataConfig, OptimConfig, TrainConfig
from lmjax.models.recurrent import RecurrentConfig


def get_config() -> Config:
    return Config(
        name="shakespeare_char_gru",
        model=RecurrentConfig(family="gru", context=64, d_embed=216, d_hidden=216, n_layers=2, dropout=0.0,
                              tied_embeddings=False),
        data=DataConfig(source="shakespeare", tokenizer="char"),
        optim=OptimConfig(lr=2e-3, schedule="cosine", warmup_steps=100, decay_steps=2000, min_lr=1e-4,
                          b1=0.9, b2=0.99, weight_decay=0.1, clip_norm=1.0),
        train=TrainConfig(steps=2000, batch_size=12, log_every=50, eval_every=500, checkpoint_every=500),
    )
