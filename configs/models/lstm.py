"""LSTM ladder: 2 layers, d_embed = d_hidden (tied, no projection), ~1e4 to ~1e7 non-embedding params.

Non-embedding parameters per model: 2 layers x 4 gates x (2 H^2 + H) = 16 H^2 + 8 H.
"""

from lmjax.models.recurrent import RecurrentConfig

# H -> non-embedding params: 24 -> 9.4e3, 48 -> 3.7e4, 80 -> 1.0e5, 144 -> 3.3e5, 256 -> 1.0e6,
# 448 -> 3.2e6, 768 -> 9.4e6
HIDDEN = (24, 48, 80, 144, 256, 448, 768)


def ladder() -> list[RecurrentConfig]:
    return [RecurrentConfig(family="lstm", vocab_size=0, context=64, d_embed=h, d_hidden=h, n_layers=2)
            for h in HIDDEN]
