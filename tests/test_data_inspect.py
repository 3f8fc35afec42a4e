"""python -m case_jax.data.inspect: statistics and inconsistencies."""
import json

import numpy as np

from case_jax.data.inspect import foreground_fraction, main
from case_jax.data import write_layout
from tests.test_data_layouts_more import small


def test_inspect_clean_dataset(tmp_path, capsys):
  write_layout("acmnet", tmp_path, small())
  assert main(["--root", str(tmp_path), "--layout", "acmnet"]) == 0
  out = capsys.readouterr().out
  assert "[train]" in out and "videos 2, classes 2, instances 2" in out
  assert "no inconsistency found" in out


def test_inspect_json_and_bad_video(tmp_path, capsys):
  videos = small()
  videos[0].rgb[1, 1] = np.nan
  write_layout("basnet", tmp_path, videos)
  code = main(["--root", str(tmp_path), "--layout", "basnet",
               "--check_values", "--json"])
  report = json.loads(capsys.readouterr().out)
  assert code == 1
  train, test = report["splits"]
  assert train["videos"] == 1 and train["skipped"][0][0] == "v0"
  assert "NaN" in train["skipped"][0][1]
  assert test["videos"] == 1 and test["skipped"] == []
  assert test["snippets"]["total"] == 7
  # Segment (0.0, 1.0) covers snippet centres 0.32 and 0.96 of 7.
  assert test["foreground_fraction_mean"] == foreground_fraction(
      7, [(0.0, 1.0, "Jump")], 0.64) == 2 / 7


def test_inspect_reports_unopenable_split(tmp_path, capsys):
  assert main(["--root", str(tmp_path), "--layout", "acmnet"]) == 1
  assert "cannot open" in capsys.readouterr().out


def test_inspect_config(tmp_path, capsys):
  from ml_collections import ConfigDict
  from case_jax.data.inspect import inspect_config
  write_layout("wtalc", tmp_path, small(), classes=("Jump", "Run"))
  config = ConfigDict({"data": {"root": str(tmp_path), "layout": "wtalc"}})
  assert inspect_config(config) == 0
  assert "layout wtalc" in capsys.readouterr().out
