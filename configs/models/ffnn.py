"""Bengio feed-forward LM ladder: window 8 (a 9-gram model), one tanh layer, d_embed = d_hidden / 2,
untied output, no direct connections; ~1e4 to ~1e7 non-embedding params.

Non-embedding parameters per model: W D H + H = 8 (H / 2) H + H = 4 H^2 + H.
"""

from lmjax.models.ffnn import FFNNConfig

# H -> non-embedding params: 48 -> 9.3e3, 88 -> 3.1e4, 160 -> 1.0e5, 288 -> 3.3e5, 512 -> 1.0e6,
# 896 -> 3.2e6, 1584 -> 1.0e7
HIDDEN = (48, 88, 160, 288, 512, 896, 1584)


def ladder() -> list[FFNNConfig]:
    return [FFNNConfig(vocab_size=0, context=64, window=8, d_embed=h // 2, d_hidden=h, n_layers=1)
            for h in HIDDEN]
