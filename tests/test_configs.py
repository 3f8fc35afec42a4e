"""Every config, variant and ablation row loads and sets what it says."""
import json
import os

import pytest

from case_jax import ablations, defaults

# Each config's to_dict(), as {dotted key: [type name, value]}, recorded from
# the configs before they were reduced to what differs from the base config.
SNAPSHOTS = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                         "config_snapshots.json")


def flat(tree, prefix=""):
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(flat(v, f"{prefix}{k}."))
    else:
      out[prefix + k] = [type(v).__name__, list(v) if isinstance(v, tuple) else v]
  return out


@pytest.mark.parametrize("spec", sorted(json.load(open(SNAPSHOTS))))
def test_configs_equal_their_snapshot(spec):
  assert flat(defaults.load_config(spec).to_dict()) == json.load(open(SNAPSHOTS))[spec]


@pytest.mark.parametrize("name", ["thumos14", "anet12", "anet13", "synthetic"])
def test_configs_and_variants(name):
  c = defaults.load_config(name)
  assert c.batch_size == 16 and c.optim.learning_rate == 1e-4
  paper = defaults.load_config(name, "paper")
  assert paper.labeling.eps_on == "log_prob" and paper.model.kernel_size == 3
  assert defaults.load_config(f"{name}:runlocal").num_steps <= 20
  with pytest.raises(ValueError, match="variant"):
    defaults.load_config(name, "nonsense")


def test_load_config_is_what_the_config_flag_gives():
  from absl import flags
  from ml_collections import config_flags
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv)
  path = os.path.join(defaults.CONFIG_DIR, "synthetic.py")
  fv(["prog", f"--config={path}:paper"])
  ours = defaults.load_config(f"{path}:paper")
  assert ours.to_dict() == fv.config.to_dict() == defaults.load_config("synthetic:paper").to_dict()
  assert ours.is_locked
  with pytest.raises(AttributeError):
    ours.model.num_cluster = 3      # locked: a typo is refused
  ours.model.num_clusters = 3       # existing keys stay settable
  with pytest.raises(FileNotFoundError):
    defaults.load_config("no_such_config")


def test_dataset_values_from_the_paper():
  t, a = defaults.load_config("thumos14"), defaults.load_config("anet13")
  assert (t.data.num_segments, t.labeling.topk_divisor, t.model.num_clusters) == (750, 8, 16)
  assert (a.data.num_segments, a.labeling.topk_divisor, a.model.num_clusters) == (50, 2, 64)
  assert a.eval.tiou_thresholds[0] == 0.5 and len(a.eval.tiou_thresholds) == 10


@pytest.mark.parametrize("row", sorted(ablations.ABLATIONS))
def test_every_ablation_row_applies(row):
  c = ablations.apply(defaults.base_config(), row)
  for dotted, value in ablations.ABLATIONS[row].items():
    node = c
    for part in dotted.split("."):
      node = node[part]
    assert node == value


def test_ablation_config_file_and_unknown_rows():
  c = defaults.load_config("ablations", "thumos14/table2/row1")
  assert not c.labeling.snippet_clustering and not c.inference.cat
  assert c.data.num_segments == 750
  with pytest.raises(KeyError, match="unknown ablation"):
    ablations.apply(defaults.base_config(), "table2/row99")
  with pytest.raises(ValueError, match="dataset"):
    defaults.load_config("ablations:nowhere/table2/row1")


@pytest.mark.parametrize("locked", [False, True])
def test_set_dotted_sets_nested_keys_and_rejects_typos(locked):
  c = defaults.base_config()
  if locked:
    c.lock()
  defaults.set_dotted(c, {"model.num_clusters": 32, "seed": 7})
  assert c.model.num_clusters == 32 and c.seed == 7
  # Refused on an unlocked config too (update_from_flattened_dict adds these).
  for bad in ("model.num_cluster", "modle.num_clusters", "sed", "seed.x"):
    with pytest.raises(KeyError, match=bad):
      defaults.set_dotted(c, {bad: 1}, what="row x")
  assert "num_cluster" not in c.model and "sed" not in c


def test_set_dotted_types_as_configdict_assignment():
  c = defaults.base_config()
  defaults.set_dotted(c, {"inference.omega": 1, "inference.max_detections": 100,
                          "loss.gce_q": 1, "data.root": "/x"})
  assert c.inference.omega == 1.0 and isinstance(c.inference.omega, float)
  assert c.inference.max_detections == 100 and c.loss.gce_q == 1.0
  defaults.set_dotted(c, {"inference.max_detections": None})
  assert c.inference.max_detections is None
  for bad in ({"model.num_clusters": 3.0}, {"model.num_clusters": "x"},
              {"labeling.snippet_clustering": 0}):
    with pytest.raises(TypeError):
      defaults.set_dotted(c, bad)
  # The same values through ml_collections' own update (locked): same results.
  d = defaults.base_config()
  d.lock()
  d.update_from_flattened_dict({"inference.omega": 1, "inference.max_detections": 100,
                                "loss.gce_q": 1, "data.root": "/x"})
  d.update_from_flattened_dict({"inference.max_detections": None})
  assert d.to_dict() == c.to_dict()
