"""nanoGPT's CPU "baby" setting at character level on Tiny Shakespeare.

4 layers, 4 heads, d_model 128, context 64, batch 12, no dropout, no biases; AdamW lr 1e-3 with
100 warmup steps and cosine decay to 1e-4 at step 2000, beta2 0.99, weight decay 0.1, clip 1.0.

The batch of 12 is taken as two accumulated microbatches of 6: the same gradient (up to float
rounding), 1.1-1.35x faster on a CPU because each half fits in the L3 cache (see
lmjax.train.step.grads_and_loss). Set --config.train.grad_accum=1 for one pass.
"""

from lmjax.config import Config, DataConfig, OptimConfig, TrainConfig
from lmjax.models.transformer import TransformerConfig


def get_config() -> Config:
    return Config(
        name="shakespeare_char",
        model=TransformerConfig(context=64, d_model=128, n_layers=4, n_heads=4, dropout=0.0, use_bias=False,
                                positions="learned", tied_embeddings=True),
        data=DataConfig(source="shakespeare", tokenizer="char"),
        optim=OptimConfig(lr=1e-3, schedule="cosine", warmup_steps=100, decay_steps=2000, min_lr=1e-4,
                          b1=0.9, b2=0.99, weight_decay=0.1, clip_norm=1.0),
        train=TrainConfig(steps=2000, batch_size=12, grad_accum=2, log_every=50, eval_every=500, checkpoint_every=500),
    )
