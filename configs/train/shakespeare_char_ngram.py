"""Interpolated modified Kneser-Ney 5-gram on characters of Tiny Shakespeare (the baseline)."""

from lmjax.config import Config, DataConfig, TrainConfig
from lmjax.models.ngram import NGramConfig


def get_config() -> Config:
    return Config(
        name="shakespeare_char_ngram",
        model=NGramConfig(order=5, context=64),
        data=DataConfig(source="shakespeare", tokenizer="char"),
        train=TrainConfig(steps=1, batch_size=12),
    )
