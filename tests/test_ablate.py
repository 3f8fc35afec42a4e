"""python -m case_jax.tools.ablate: paper-shaped ablation tables on tiny data."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from case_jax import ablations
from case_jax.tools import ablate
from test_seeds import no_figures
from test_train import tiny_config
from tests.cli_check import assert_clean_refusal

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config.num_steps=3", "--config.eval_every=0", "--config.log_every=3",
        "--config.checkpoint_every=3", "--config.batch_size=8",
        "--config.data.num_segments=32", "--config.model.embed_dim=16",
        "--config.model.num_clusters=6", "--config.eval.num_plots=0",
        "--config.data.synthetic.num_train=16", "--config.data.synthetic.num_test=8",
        "--config.data.synthetic.num_classes=4", "--config.data.synthetic.feature_dim=12"]


def run_ablate(*args):
  env = dict(os.environ, PYTHONPATH=REPO)
  env.pop("XLA_FLAGS", None)  # one device, like a user's laptop
  return subprocess.run([sys.executable, "-m", "case_jax.tools.ablate", *args],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def cells(line):
  return [c.strip() for c in line.strip().strip("|").split("|")]


def test_table2_rows_from_the_command_line(tmp_path):
  work = str(tmp_path / "abl")
  proc = run_ablate("--config=configs/synthetic.py", "--table=2", "--seeds=2",
                    "--rows=row1,row8", f"--workdir={work}", *TINY)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert "Seeds 0,1: vmap" in proc.stdout
  md = open(os.path.join(work, "table2.md")).read().strip().splitlines()
  assert md[0].startswith("Table 2: Contribution of each component")
  head = cells(md[2])
  assert head[:6] == ["Row", "SCC", "CCC", "DDCL", "TSCL", "CAT"]
  assert head[6:] == [f"mAP@0.{i}" for i in range(1, 8)] + [
      "AVG(0.1:0.5)", "AVG(0.3:0.7)", "AVG", "ACC", "paper AVG", "paper ACC"]
  row1, row8 = cells(md[4]), cells(md[5])
  assert len(md) == 6 and row1[0] == "1" and row8[0] == "8"
  assert row1[1:6] == [""] * 5 and row8[1:6] == ["\u2713"] * 5
  assert row1[-2:] == ["38.3", "73.6"] and row8[-2:] == ["46.2", "77.5"]
  # The numbers are the per-seed eval/metrics.json files: mean ± sample std.
  info = json.load(open(os.path.join(work, "table2.json")))
  for row, line in zip(info["rows"], (row1, row8)):
    d = os.path.join(work, row["preset"].replace("/", "_"))
    avg = [json.load(open(os.path.join(d, f"seed_{s}", "eval", "metrics.json")))
           ["average_map"] for s in (0, 1)]
    assert row["columns"]["AVG"]["per_seed"] == avg
    assert line[head.index("AVG")] == (f"{100 * np.mean(avg):.2f} ± "
                                       f"{100 * np.std(avg, ddof=1):.2f}")
  assert info["rows"][0]["overrides"] == ablations.ABLATIONS["table2/row1"]
  # Rerunning reuses every trained row.
  proc = run_ablate("--config=configs/synthetic.py", "--table=2", "--seeds=2",
                    "--rows=row8", f"--workdir={work}", *TINY)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "all already trained" in proc.stdout


@no_figures()
def test_table5_three_evaluations_of_one_training(tmp_path):
  cfg = tiny_config(num_steps=3, eval_every=0, log_every=3, checkpoint_every=3,
                    **{"eval.num_plots": 0})
  cfg.data.synthetic = dict(num_train=16, num_test=8, num_classes=4,
                            feature_dim=12, seed=0)
  out = ablate.run_table(cfg, 5, str(tmp_path), seeds=[0], rows=["case"],
                         devices=jax.devices()[:1], stream=open(os.devnull, "w"))
  md = out["markdown"].splitlines()
  assert cells(md[0]) == ["Row", "\u03bb_R", "\u03b2^R", "P^A", "P\u0302^A",
                          "P\u0308^A", "paper P^A", "paper P\u0302^A", "paper P\u0308^A"]
  assert len(md) == 3 and cells(md[2])[:3] == ["case", "0.3", "Eq. 12"]
  assert cells(md[2])[-3:] == ["43.9", "44.1", "46.2"]
  seed_dir = tmp_path / "table5_case" / "seed_0"
  assert len(os.listdir(seed_dir / "checkpoints")) == 1   # trained once
  cols = out["rows"][0]["columns"]
  for header, name in (("P^A", "eval_fg_attention"), ("P\u0302^A", "eval_fg_cluster"),
                       ("P\u0308^A", "eval")):   # fused = the training config's
    m = json.load(open(seed_dir / name / "metrics.json"))
    assert cols[header]["per_seed"] == [m["average_map"]]
  assert json.load(open(seed_dir / "eval_fg_cluster" / "metrics.json"))[
      "overrides"]["inference.fg_score"] == "cluster"


def test_bad_table_row_or_seeds_are_clear_errors(tmp_path):
  with pytest.raises(ValueError, match="tables with presets: 2, 3, 4, 5, 9, 10"):
    ablations.table(7)
  with pytest.raises(ValueError, match="no row 'row9'.*row1, row2"):
    ablations.table(2).select(["row1", "row9"])
  with pytest.raises(ValueError, match="no row"):
    ablate.run_table(tiny_config(), 3, str(tmp_path), rows=["k5"])
  assert not os.listdir(tmp_path)        # refused before anything is written
  assert [r.name for r in ablations.table("3").select(["table3/k16", "k0"])] == [
      "k0", "k16"]
  assert ablate.parse_seed_arg("3") == [0, 1, 2]
  assert ablate.parse_seed_arg("4,7") == [4, 7]
  for bad in ("0", "x"):
    with pytest.raises(ValueError):
      ablate.parse_seed_arg(bad)
  proc = run_ablate("--config=configs/synthetic.py", "--table=11")
  assert_clean_refusal(proc, "case_jax.tools.ablate: error: no ablation table '11'")


def test_every_table_row_is_a_preset():
  for number, spec in ablations.TABLES.items():
    assert spec.number == number
    for row in spec.rows:
      assert row.preset in ablations.ABLATIONS and row.preset.startswith(f"table{number}/")
      assert len(row.cells) == len(spec.columns)


def _effective(preset):
  """The config a preset trains: base config + its overrides, flattened."""
  from case_jax import defaults
  cfg = ablations.apply(defaults.base_config(), preset)
  flat = {}

  def walk(node, prefix):
    for k, v in node.items():
      if hasattr(v, "items"):
        walk(v, f"{prefix}{k}.")
      else:
        flat[f"{prefix}{k}"] = v
  walk(cfg, "")
  return flat


def test_switch_cells_are_what_the_presets_set():
  """Each ✓ of Tables 2, 9 and 10 is read off the effective config, not off
  the table's own data."""
  y = "\u2713"
  for row in ablations.TABLES[2].rows:
    c = _effective(row.preset)
    tscl = (c["labeling.colabel_topk"] and c["labeling.colabel_clusters"]
            and c["labeling.colabel_cluster_cls"])
    want = (c["labeling.snippet_clustering"], c["labeling.cluster_classification"],
            c["labeling.ddcl"], tscl, c["inference.cat"])
    assert row.cells == tuple(y if w else "" for w in want), row.preset
  for row in ablations.TABLES[9].rows:
    c = _effective(row.preset)
    want = (True, c["labeling.use_attention"],
            c["labeling.use_attention"] and c["loss.attention"] == "gce")
    assert row.cells == tuple(y if w else "" for w in want), row.preset
  for row in ablations.TABLES[10].rows:
    c = _effective(row.preset)
    want = (c["labeling.colabel_topk"], c["labeling.colabel_cluster_cls"],
            c["labeling.colabel_clusters"])
    assert row.cells == tuple(y if w else "" for w in want), row.preset
  for row in ablations.TABLES[3].rows:
    k = int(row.cells[0])
    if k:
      assert _effective(row.preset)["model.num_clusters"] == k


def test_rows_the_paper_reports_as_the_same_model_are_the_same_config():
  """The paper prints the same number for the same model in several tables
  (38.3 the baseline, 40.3 SCC with K^C = 16, 46.2 full CASE): those
  presets must train the same config."""
  same = [("table2/row1", "table3/k0", "table9/row3"),
          ("table2/row2", "table3/k16"),
          ("table2/row8", "table4/dcl_soft", "table5/case", "table10/row6")]
  for group in same:
    first = _effective(group[0])
    for other in group[1:]:
      got = _effective(other)
      diff = {k for k in first if first[k] != got.get(k)}
      assert not diff, f"{group[0]} vs {other}: {sorted(diff)}"
