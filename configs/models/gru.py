"""GRU ladder: 2 layers, d_embed = d_hidden (tied, no projection), ~1e4 to ~1e7 non-embedding params.

Non-embedding parameters per model: 2 layers x 3 gates x (2 H^2 + H) = 12 H^2 + 6 H.
"""

from lmjax.models.recurrent import RecurrentConfig

# H -> non-embedding params: 32 -> 1.2e4, 56 -> 3.8e4, 96 -> 1.1e5, 160 -> 3.1e5, 288 -> 1.0e6,
# 512 -> 3.1e6, 912 -> 1.0e7
HIDDEN = (32, 56, 96, 160, 288, 512, 912)


def ladder() -> list[RecurrentConfig]:
    return [RecurrentConfig(family="gru", vocab_size=0, context=64, d_embed=h, d_hidden=h, n_layers=2)
            for h in HIDDEN]
