"""Bengio et al. (2003) feed-forward LM on characters of Tiny Shakespeare, baseline budget.

Window of 8 previous characters, 64-dim embeddings, one tanh layer of 512 units, direct
connections off; context 64, batch 12, 2000 steps, AdamW peak lr 2e-3, cosine to 1e-4.
"""

from lmjax.config import Config, DataConfig, OptimConfig, TrainConfig
from lmjax.models.ffnn import FFNNConfig


def get_config() -> Config:
    return Config(
        name="shakespeare_char_ffnn",
        model=FFNNConfig(context=64, window=8, d_embed=64, d_hidden=512, n_layers=1, direct=False),
        data=DataConfig(source="shakespeare", tokenizer="char"),
        optim=OptimConfig(lr=2e-3, schedule="cosine", warmup_steps=100, decay_steps=2000, min_lr=1e-4,
                          b1=0.9, b2=0.99, weight_decay=0.1, clip_norm=1.0),
        train=TrainConfig(steps=2000, batch_size=12, log_every=50, eval_every=500, checkpoint_every=500),
    )
