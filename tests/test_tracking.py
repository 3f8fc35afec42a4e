"""case_jax.tracking: TensorBoard scalars through tensorboardX, read back with
TensorBoard's own reader (its purge of re-run steps applied), and Progress."""
import glob
import io
import math

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from case_jax import tracking


def read_scalars(logdir):
  """{tag: [(step, value)]} as TensorBoard shows them."""
  acc = event_accumulator.EventAccumulator(str(logdir))
  acc.Reload()
  return {tag: [(e.step, e.value) for e in acc.Scalars(tag)]
          for tag in acc.Tags()["scalars"]}


def test_scalar_writer_round_trip(tmp_path):
  with tracking.ScalarWriter(str(tmp_path / "tb")) as w:
    w.write(1, {"loss": 0.5, "L_V": np.float32(1.25), "mAP": np.array(0.4),
                "skipped_text": "x", "skipped_vector": np.ones(3)})
    w.write(2, {"loss": float("nan"), "big/step": 3})
    w.write(2**40, {"loss": -1e30})
  got = read_scalars(tmp_path / "tb")
  assert sorted(got) == ["L_V", "big/step", "loss", "mAP"]
  assert [s for s, _ in got["loss"]] == [1, 2, 2**40]
  assert got["loss"][0][1] == pytest.approx(0.5) and math.isnan(got["loss"][1][1])
  assert got["loss"][2][1] == pytest.approx(-1e30, rel=1e-6)
  assert got["L_V"] == [(1, 1.25)] and got["big/step"] == [(2, 3.0)]
  assert got["mAP"][0][1] == pytest.approx(0.4)
  w.close()  # closing twice is harmless


def test_numeric_scalars_keeps_numbers_only():
  assert tracking.numeric_scalars({"a": 1, "b": np.float32(2), "c": True,
                                   "d": "x", "e": np.ones(2), "f": None}) == {
      "a": 1.0, "b": 2.0, "c": 1.0}


def test_two_writers_in_one_second_use_different_files(tmp_path):
  a, b = tracking.ScalarWriter(str(tmp_path)), tracking.ScalarWriter(str(tmp_path))
  a.write(1, {"x": 1.0})
  b.write(2, {"x": 2.0})
  a.close(), b.close()
  assert len(glob.glob(str(tmp_path / "events.out.tfevents.*"))) == 2
  assert read_scalars(tmp_path)["x"] == [(1, 1.0), (2, 2.0)]


def test_purge_step_hides_the_steps_a_resumed_run_logs_again(tmp_path):
  """Steps 1..6 logged, the run resumed from its checkpoint at step 4:
  TensorBoard shows 1..8 once, the re-run 5 and 6 with their new values."""
  with tracking.ScalarWriter(str(tmp_path)) as w:
    for step in range(1, 7):
      w.write(step, {"loss": 1.0})
  with tracking.ScalarWriter(str(tmp_path), purge_step=5) as w:
    for step in range(5, 9):
      w.write(step, {"loss": 2.0})
  assert read_scalars(tmp_path)["loss"] == [(s, 1.0) for s in range(1, 5)] + [
      (s, 2.0) for s in range(5, 9)]


def test_progress_prints_plain_lines_off_a_terminal():
  out = io.StringIO()
  p = tracking.Progress(20, 0, out, every=10)
  for step in range(1, 21):
    p.update(step, {"loss": 0.5, "other": 1.0})
  lines = out.getvalue().splitlines()
  assert len(lines) == 2 and lines[-1].startswith("[" + "#" * 24 + "] 20/20")
  assert "loss=0.5" in lines[0] and "other" not in lines[0]
