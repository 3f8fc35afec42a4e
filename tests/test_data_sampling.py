"""Released sampling (random_perturb, uniform_sampling) and batching."""
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from case_jax.data import (TrainBatcher, VideoRecord, epoch_order,
                           eval_batches, sample_test_indices,
                           sample_train_indices, train_batch)
from case_jax.data.batching import steps_per_epoch

# (L, T) pairs: shorter, longer, equal, off-by-one, tiny, real-sized.
CASES = [(1, 7), (2, 7), (5, 7), (6, 7), (7, 7), (8, 7), (13, 7), (50, 7),
         (3, 1), (1, 1), (100, 33), (235, 750), (749, 750), (751, 750),
         (1835, 750)]


# ---------------------------------------------------------------------------
# Direct transcriptions of official_code_notes.md section 4.
# ---------------------------------------------------------------------------
def transcribed_train_support(length, t):
  """Per position, the candidate set described for random_perturb."""
  if length == t:
    return [[i] for i in range(t)]
  s = np.arange(t) * length / t          # float base positions, as released
  out = []
  for i in range(t):
    if i < t - 1:
      lo, hi = int(s[i]), int(s[i + 1])
      out.append(list(range(lo, hi + 1)) if lo != hi else [lo])
    else:
      lo = int(s[i])
      out.append(list(range(lo, length)) if lo < length - 1 else [lo])
  return out


def transcribed_uniform(length, t):
  if length == t:
    return np.arange(t)
  return np.floor(np.arange(t) * length / t).astype(int)


@pytest.mark.parametrize("length,t", CASES)
def test_uniform_matches_transcription(length, t):
  np.testing.assert_array_equal(sample_test_indices(length, t),
                                transcribed_uniform(length, t))


@pytest.mark.parametrize("length,t", CASES)
def test_train_draws_stay_in_transcribed_support_and_cover_it(length, t):
  support = transcribed_train_support(length, t)
  rng = np.random.default_rng(0)
  draws = np.stack([sample_train_indices(length, t, rng) for _ in range(300)])
  for i, cand in enumerate(support):
    assert set(draws[:, i]) == set(cand), (i, cand)


def test_train_draws_are_uniform_within_strata():
  # L = 3T: every stratum is {3i, .., 3i + 3} (upper bound included), so each
  # offset 0..3 should come up a quarter of the time.
  t, length = 50, 150
  rng = np.random.default_rng(1)
  draws = np.stack([sample_train_indices(length, t, rng) for _ in range(400)])
  offsets = (draws[:, :-1] - 3 * np.arange(t - 1)).ravel()
  freq = np.bincount(offsets, minlength=4) / offsets.size
  np.testing.assert_allclose(freq, 0.25, atol=0.02)
  # Last position: uniform over {147, 148, 149}.
  np.testing.assert_allclose(np.bincount(draws[:, -1] - 147) / 400, 1 / 3,
                             atol=0.07)


def test_train_is_deterministic_given_the_generator():
  a = sample_train_indices(400, 128, np.random.default_rng(5))
  b = sample_train_indices(400, 128, np.random.default_rng(5))
  c = sample_train_indices(400, 128, np.random.default_rng(6))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


@pytest.mark.parametrize("fn", [
    lambda n, t: sample_test_indices(n, t),
    lambda n, t: sample_train_indices(n, t, np.random.default_rng(0))])
def test_bad_lengths_raise(fn):
  with pytest.raises(ValueError, match="at least one snippet"):
    fn(0, 10)
  with pytest.raises(ValueError, match=">= 1"):
    fn(10, 0)


# ---------------------------------------------------------------------------
# Properties.
# ---------------------------------------------------------------------------
lengths = st.integers(1, 3000)
targets = st.integers(1, 800)


@settings(max_examples=150, deadline=None)
@given(lengths, targets)
def test_uniform_properties(length, t):
  idx = sample_test_indices(length, t)
  assert idx.shape == (t,) and idx.dtype == np.int64
  assert idx[0] == 0 and idx.max() <= length - 1
  assert np.all(np.diff(idx) >= 0)
  step = -(-length // t)
  if length <= t:                  # stretched: every snippet appears
    np.testing.assert_array_equal(np.unique(idx), np.arange(length))
  else:                            # subsampled: gaps no wider than a stratum
    assert np.all(np.diff(idx) <= step)
  if length == t:
    np.testing.assert_array_equal(idx, np.arange(t))


@settings(max_examples=150, deadline=None)
@given(lengths, targets, st.integers(0, 2**32 - 1))
def test_train_properties(length, t, seed):
  idx = sample_train_indices(length, t, np.random.default_rng(seed))
  assert idx.shape == (t,) and idx.dtype == np.int64
  assert idx.min() >= 0 and idx.max() <= length - 1
  assert np.all(np.diff(idx) >= 0)
  step = -(-length // t)
  # Each position lies in its (inclusive) stratum, so the samples span the
  # video: small first and last gaps, gaps of at most two strata.
  assert idx[0] <= step and idx[-1] >= length - 1 - step
  assert np.all(np.diff(idx) <= 2 * step)
  if length == t:
    np.testing.assert_array_equal(idx, np.arange(t))


# ---------------------------------------------------------------------------
# Batching.
# ---------------------------------------------------------------------------
def _records(num_videos=23, dim=3, num_classes=4):
  rng = np.random.default_rng(0)
  out = []
  for k in range(num_videos):
    n = int(rng.integers(5, 40))
    # Row j of a video is (k, j, ...) so gathers can be checked by value.
    x = np.zeros((n, dim), np.float32)
    x[:, 0], x[:, 1] = k, np.arange(n)
    labels = np.zeros(num_classes, np.float32)
    labels[k % num_classes] = 1
    out.append(VideoRecord(f"v{k:03d}", x, -x, labels, (), n * 0.64))
  return out


def _assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])


def test_train_batch_shapes_and_content():
  data = _records()
  batch = train_batch(data, 0, seed=3, batch_size=4, num_segments=16)
  assert batch["rgb"].shape == (4, 16, 3) and batch["rgb"].dtype == np.float32
  assert batch["flow"].shape == (4, 16, 3)
  assert batch["labels"].shape == (4, 4)
  assert batch["lengths"].dtype == np.int32
  for b in range(4):
    rec = data[int(batch["video_ids"][b][1:])]
    assert batch["lengths"][b] == rec.num_snippets
    np.testing.assert_array_equal(batch["labels"][b], rec.labels)
    rows = batch["rgb"][b, :, 1].astype(int)     # gathered snippet indices
    assert np.all(batch["rgb"][b, :, 0] == int(rec.video_id[1:]))
    assert np.all(np.diff(rows) >= 0) and rows.max() < rec.num_snippets
    np.testing.assert_array_equal(batch["flow"][b], -batch["rgb"][b])


class _CountingDataset:
  """Records the indices read, to check a process reads only its rows."""

  def __init__(self, records):
    self.records, self.read = records, []

  def __len__(self):
    return len(self.records)

  def __getitem__(self, i):
    self.read.append(int(i))
    return self.records[i]


@pytest.mark.parametrize("step", (0, 4, 7))      # 7 is in the second epoch
def test_process_rows_concatenate_to_the_global_batch(step):
  """Multi-host reading: each process's rows, read on their own, are exactly
  its slice of the global batch, and only those rows' videos are read."""
  data = _records(23)
  full = train_batch(data, step, seed=2, batch_size=6, num_segments=8)
  pieces = []
  for start in (0, 2, 4):                        # three processes, 2 rows each
    counting = _CountingDataset(data)
    part = train_batch(counting, step, seed=2, batch_size=6, num_segments=8,
                       rows=slice(start, start + 2))
    assert [f"v{i:03d}" for i in counting.read] == list(full["video_ids"][start:start + 2])
    pieces.append(part)
  _assert_batches_equal(
      {k: np.concatenate([p[k] for p in pieces]) for k in full}, full)


def test_open_ended_process_rows():
  data = _records(23)
  full = train_batch(data, 3, seed=2, batch_size=6, num_segments=8)
  tail = train_batch(data, 3, seed=2, batch_size=6, num_segments=8, rows=slice(4, None))
  _assert_batches_equal(tail, {k: v[4:] for k, v in full.items()})


@pytest.mark.parametrize("rows", (slice(0, 0), slice(4, 8), slice(0, 4, 2),
                                  slice(6, None), slice(-2, None)))
def test_bad_process_rows_are_rejected(rows):
  with pytest.raises(ValueError, match="contiguous"):
    train_batch(_records(23), 0, seed=0, batch_size=6, num_segments=8, rows=rows)


def test_epochs_shuffle_without_repeats_and_drop_last():
  data = _records(23)
  per_epoch = steps_per_epoch(23, 4)
  assert per_epoch == 5                          # 3 videos dropped per epoch
  orders = []
  for epoch in range(3):
    ids = np.concatenate([
        train_batch(data, epoch * per_epoch + i, seed=0, batch_size=4,
                    num_segments=8)["video_ids"] for i in range(per_epoch)])
    assert len(set(ids)) == 20
    expected = [f"v{k:03d}" for k in epoch_order(23, 0, epoch)[:20]]
    assert list(ids) == expected
    orders.append(tuple(ids))
  assert len(set(orders)) == 3                   # reshuffled every epoch


def test_batcher_resume_matches_uninterrupted_run():
  data = _records(23)
  uninterrupted = TrainBatcher(data, batch_size=4, num_segments=16, seed=11)
  reference = [next(uninterrupted) for _ in range(17)]   # > 3 epochs

  first = TrainBatcher(data, batch_size=4, num_segments=16, seed=11)
  for _ in range(7):
    next(first)
  saved = json.loads(json.dumps(first.state()))
  assert (saved["epoch"], saved["index"]) == (1, 2)

  resumed = TrainBatcher(data, batch_size=4, num_segments=16, seed=0)
  resumed.restore(saved)
  for step in range(7, 17):
    _assert_batches_equal(next(resumed), reference[step])
    _assert_batches_equal(uninterrupted.batch_at(step), reference[step])


def test_batcher_is_deterministic_per_seed():
  data = _records()
  a = [next(TrainBatcher(data, batch_size=4, num_segments=16, seed=1))]
  b = [next(TrainBatcher(data, batch_size=4, num_segments=16, seed=1))]
  c = [next(TrainBatcher(data, batch_size=4, num_segments=16, seed=2))]
  _assert_batches_equal(a[0], b[0])
  assert not np.array_equal(a[0]["rgb"], c[0]["rgb"])


def test_batcher_restore_refuses_other_settings():
  data = _records(23)
  state = TrainBatcher(data, batch_size=4, num_segments=16).state()
  with pytest.raises(ValueError, match="batch_size=4"):
    TrainBatcher(data, batch_size=8, num_segments=16).restore(state)
  with pytest.raises(ValueError, match="num_videos=23"):
    TrainBatcher(data[:20], batch_size=4, num_segments=16).restore(state)


def test_too_few_videos_for_a_batch():
  with pytest.raises(ValueError, match="no full batch"):
    TrainBatcher(_records(3), batch_size=4)


def test_eval_batches_uniform_and_padded():
  data = _records(7)
  batches = list(eval_batches(data, num_segments=10, batch_size=3,
                              pad_last=True))
  assert [b["rgb"].shape for b in batches] == [(3, 10, 3)] * 3
  valid = np.concatenate([b["valid"] for b in batches])
  np.testing.assert_array_equal(valid, [True] * 7 + [False] * 2)
  ids = np.concatenate([b["video_ids"] for b in batches])[:7]
  assert list(ids) == [r.video_id for r in data]
  lengths = np.concatenate([b["lengths"] for b in batches])[:7]
  np.testing.assert_array_equal(lengths, [r.num_snippets for r in data])
  for k, rec in enumerate(data):
    b, row = divmod(k, 3)
    np.testing.assert_array_equal(
        batches[b]["rgb"][row],
        rec.rgb[sample_test_indices(rec.num_snippets, 10)])
  assert np.all(batches[-1]["rgb"][1:] == 0)


def test_eval_batches_full_length():
  data = _records(4)
  batches = list(eval_batches(data, num_segments=None))
  assert len(batches) == 4
  for b, rec in zip(batches, data):
    np.testing.assert_array_equal(b["rgb"][0], rec.rgb)
    assert b["lengths"][0] == rec.num_snippets
  with pytest.raises(ValueError, match="batch_size=1"):
    list(eval_batches(data, num_segments=None, batch_size=2))
