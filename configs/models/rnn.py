"""Elman (tanh) RNN ladder: 2 layers, d_embed = d_hidden (tied, no projection), ~1e4 to ~1e7
non-embedding params.

Non-embedding parameters per model: 2 layers x (2 H^2 + H) = 4 H^2 + 2 H.
"""

from lmjax.models.recurrent import RecurrentConfig

# H -> non-embedding params: 48 -> 9.3e3, 88 -> 3.1e4, 160 -> 1.0e5, 288 -> 3.3e5, 512 -> 1.0e6,
# 896 -> 3.2e6, 1584 -> 1.0e7
HIDDEN = (48, 88, 160, 288, 512, 896, 1584)


def ladder() -> list[RecurrentConfig]:
    return [RecurrentConfig(family="rnn", vocab_size=0, context=64, d_embed=h, d_hidden=h, n_layers=2)
            for h in HIDDEN]
