"""Transformer ladder: d_model / n_layers grow together (aspect ratio ~32-64), head dim 16-64,
~1e4 to ~1e7 non-embedding parameters (12 L D^2 + 2 L D + D per model with GELU, no biases).
"""

from lmjax.models.transformer import TransformerConfig

# (d_model, n_layers, n_heads) -> non-embedding params: 1.4e4, 5.6e4, 1.5e5, 5.9e5, 1.8e6, 4.7e6, 1.1e7
SIZES = ((24, 2, 2), (48, 2, 4), (64, 3, 4), (128, 3, 4), (192, 4, 6), (256, 6, 8), (384, 6, 8))


def ladder() -> list[TransformerConfig]:
    return [TransformerConfig(vocab_size=0, context=64, d_model=d, n_layers=n, n_heads=h) for d, n, h in SIZES]
