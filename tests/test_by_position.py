"""Loss by context position (Kaplan et al. 2020, fig. 7): the LSTM's state carries information."""

import numpy as np
import pytest

from lmjax import config as config_lib
from lmjax.evaluate import evaluate_run
from lmjax.train.loop import train


@pytest.fixture(scope="module")
def cyclic_corpus(tmp_path_factory):
    """A random 4-letter sequence of period 97 repeated: the next letter is certain once enough of
    the past is known, and unknowable (ln 4 nats) with no context."""
    rng = np.random.default_rng(0)
    cycle = "".join(rng.choice(list("abcd"), 97))
    path = tmp_path_factory.mktemp("cyc") / "cyc.txt"
    path.write_text(cycle * 300)
    return path


def test_lstm_loss_decreases_with_context_position(cyclic_corpus, tmp_path):
    cfg = config_lib.apply_overrides(config_lib.load_config_file("configs/train/shakespeare_char_lstm.py"), {
        "data.source": f"files:{cyclic_corpus}", "data.cache_dir": str(tmp_path / "cache"),
        "model.d_embed": 16, "model.d_hidden": 64, "model.n_layers": 1, "model.context": 32,
        "train.steps": 150, "train.batch_size": 16, "train.eval_every": 0, "train.checkpoint_every": 0,
        "optim.lr": 1e-2, "optim.warmup_steps": 10, "optim.decay_steps": 150, "log.wandb": "disabled"})
    train(cfg, str(tmp_path / "run"))
    loss = np.asarray(evaluate_run(str(tmp_path / "run"), by_position=True)["loss_by_position"])
    assert loss.shape == (32,)
    assert loss[0] > 1.0  # no context: about ln 4
    blocks = [loss[a:b].mean() for a, b in ((0, 2), (2, 4), (4, 8), (8, 16), (16, 32))]
    assert all(x > y for x, y in zip(blocks, blocks[1:])), blocks
    assert loss[16:32].mean() < 0.2 * loss[0]
