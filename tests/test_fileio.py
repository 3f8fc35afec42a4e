"""Atomic result files (case_jax/fileio.py)."""
import os

import pytest

from case_jax import fileio


def test_write_replaces_whole_files_and_reads_back(tmp_path):
  path = tmp_path / "sub" / "table.json"
  fileio.write_json(path, {"a": 1})
  fileio.write_json(path, {"b": [1, 2]})
  assert fileio.read_json(path) == {"b": [1, 2]}
  fileio.write_text(tmp_path / "t.md", "| x |\n")
  assert (tmp_path / "t.md").read_text() == "| x |\n"
  assert sorted(os.listdir(tmp_path / "sub")) == ["table.json"]   # no temp left


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
  path = tmp_path / "seeds.md"
  fileio.write_text(path, "old\n")

  def fail(f):
    f.write("half a ta")
    raise RuntimeError("disk full")
  with pytest.raises(RuntimeError, match="disk full"):
    fileio.atomic_write(path, fail)
  assert path.read_text() == "old\n"
  assert os.listdir(tmp_path) == ["seeds.md"]
