"""Batches as pure functions of (seed, step, process); evaluation windows; truncated-BPTT streams.

Token arrays are np.arange(n), so every token's value is its position and windows can be checked
for contiguity and coverage directly.
"""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from lmjax.data import batches
from lmjax.errors import DataError

N, T, B = 1000, 16, 8


def tokens(n=N):
    return np.arange(n, dtype=np.int32)


def contiguous(rows, n=None):
    steps = np.diff(rows.astype(np.int64), axis=1)
    return bool(np.all(steps == 1 if n is None else steps % n == 1))


# ---------------------------------------------------------------- random windows

def test_train_batch_is_a_pure_function_of_seed_and_step():
    a = batches.train_batch(tokens(), seed=3, step=7, batch_size=B, seq_len=T)
    b = batches.train_batch(tokens().copy(), seed=3, step=7, batch_size=B, seq_len=T)
    assert a.shape == (B, T + 1) and a.dtype == np.int32
    assert np.array_equal(a, b)
    assert contiguous(a)  # inputs and targets shifted by one come from one window
    assert a.min() >= 0 and a.max() < N


def test_train_batches_differ_across_steps_and_seeds():
    by_step = [batches.train_batch(tokens(), seed=0, step=s, batch_size=B, seq_len=T).tobytes() for s in range(20)]
    assert len(set(by_step)) == 20
    by_seed = [batches.train_batch(tokens(), seed=s, step=0, batch_size=B, seq_len=T).tobytes() for s in range(20)]
    assert len(set(by_seed)) == 20


@pytest.mark.parametrize("process_count", [1, 2, 4, 8])
def test_process_rows_concatenate_to_the_global_batch(process_count):
    for fn in (batches.train_batch, batches.stream_batch):
        full = fn(tokens(), seed=1, step=5, batch_size=B, seq_len=T)
        parts = [fn(tokens(), seed=1, step=5, batch_size=B, seq_len=T, process_index=i,
                    process_count=process_count) for i in range(process_count)]
        assert all(p.shape == (B // process_count, T + 1) for p in parts)
        assert np.array_equal(np.concatenate(parts), full)


def test_batch_not_divisible_by_processes_is_a_data_error():
    with pytest.raises(DataError, match="not divisible"):
        batches.train_batch(tokens(), seed=0, step=0, batch_size=6, seq_len=T, process_index=0, process_count=4)


def test_windows_cover_every_start_including_the_last():
    n, t = 40, 8
    starts = set()
    for step in range(300):
        rows = batches.train_batch(tokens(n), seed=0, step=step, batch_size=4, seq_len=t)
        starts.update(rows[:, 0].tolist())
    assert starts == set(range(n - t))  # the last window ends on the last token


@pytest.mark.parametrize("train_tokens", [50, 200])
def test_train_tokens_restricts_windows_to_the_prefix(train_tokens):
    usable = batches.usable_tokens(tokens(), train_tokens)
    assert np.array_equal(usable, np.arange(train_tokens))
    seen = set()
    for step in range(200):  # many more tokens than the prefix holds: it is repeated
        rows = batches.train_batch(usable, seed=0, step=step, batch_size=B, seq_len=T)
        assert rows.max() < train_tokens
        seen.update(rows[:, 0].tolist())
    assert seen == set(range(train_tokens - T))
    for step in range(50):
        assert batches.stream_batch(usable, seed=0, step=step, batch_size=2, seq_len=T).max() < train_tokens


def test_train_tokens_zero_means_the_whole_split():
    assert len(batches.usable_tokens(tokens(), 0)) == N


def test_context_longer_than_the_tokens_is_a_data_error():
    with pytest.raises(DataError, match="context"):
        batches.train_batch(tokens(16), seed=0, step=0, batch_size=2, seq_len=16)
    batches.train_batch(tokens(17), seed=0, step=0, batch_size=2, seq_len=16)  # exactly one window fits


# ---------------------------------------------------------------- truncated-BPTT streams

def test_stream_batch_is_pure_and_rows_continue_across_steps():
    n = N
    windows = ((n - 1) // B) // T
    prev = batches.stream_batch(tokens(n), seed=2, step=0, batch_size=B, seq_len=T)
    for step in range(1, windows):
        cur = batches.stream_batch(tokens(n), seed=2, step=step, batch_size=B, seq_len=T)
        assert np.array_equal(cur, batches.stream_batch(tokens(n), seed=2, step=step, batch_size=B, seq_len=T))
        assert contiguous(cur, n)
        # row b at step s + 1 starts where step s ended: its first input is the last target before
        assert np.array_equal(cur[:, 0], prev[:, -1])
        prev = cur


def test_stream_rows_read_disjoint_tokens_within_an_epoch():
    n = N
    windows = ((n - 1) // B) // T
    targets = np.concatenate([batches.stream_batch(tokens(n), seed=5, step=s, batch_size=B, seq_len=T)[:, 1:]
                              .ravel() for s in range(windows)])
    assert len(targets) == B * T * windows
    assert len(np.unique(targets)) == len(targets)  # no token is a target twice in one pass


def test_stream_batch_depends_on_the_seed():
    a = batches.stream_batch(tokens(), seed=0, step=0, batch_size=B, seq_len=T)
    assert any(not np.array_equal(a, batches.stream_batch(tokens(), seed=s, step=0, batch_size=B, seq_len=T))
               for s in range(1, 4))


def test_stream_batch_too_few_tokens_is_a_data_error():
    with pytest.raises(DataError, match="stateful"):
        batches.stream_batch(tokens(100), seed=0, step=0, batch_size=8, seq_len=16)


# ---------------------------------------------------------------- evaluation windows

@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 120), seq_len=st.integers(1, 17), batch_size=st.integers(1, 5))
def test_eval_windows_cover_each_target_exactly_once(n, seq_len, batch_size):
    out = list(batches.eval_windows(tokens(n), seq_len, batch_size))
    inputs, targets = [], []
    for windows, mask in out:
        assert windows.shape == (batch_size, seq_len + 1) and windows.dtype == np.int32
        assert mask.shape == (batch_size, seq_len) and mask.dtype == np.float32
        assert set(np.unique(mask)) <= {0.0, 1.0}
        keep = mask == 1.0
        inputs.append(windows[:, :-1][keep])
        targets.append(windows[:, 1:][keep])
    inputs, targets = np.concatenate(inputs), np.concatenate(targets)
    assert np.array_equal(np.sort(targets), np.arange(1, n))  # every target exactly once
    assert np.array_equal(targets, inputs + 1)  # each target follows its own input
    n_windows = -(-(n - 1) // seq_len)
    assert len(out) == -(-n_windows // batch_size)
    flat = np.concatenate([w for w, _ in out])
    assert np.array_equal(flat[:n_windows, 0], np.arange(n_windows) * seq_len)  # non-overlapping windows


def test_eval_windows_max_batches():
    full = list(batches.eval_windows(tokens(), T, 4))
    some = list(batches.eval_windows(tokens(), T, 4, max_batches=3))
    assert len(full) > 3 and len(some) == 3
    for (w1, m1), (w2, m2) in zip(full, some):
        assert np.array_equal(w1, w2) and np.array_equal(m1, m2)


def test_eval_windows_need_two_tokens():
    with pytest.raises(DataError, match="fewer than 2"):
        list(batches.eval_windows(tokens(1), T, 4))
