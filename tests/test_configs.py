"""Every config, variant and ablation row loads and sets what it says."""
import importlib.util
import os

import pytest

from case_jax import ablations, defaults

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "configs")


def load(name, arg=""):
  spec = importlib.util.spec_from_file_location(name, os.path.join(CONFIGS, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.mark.parametrize("name", ["thumos14", "anet12", "anet13", "synthetic"])
def test_configs_and_variants(name):
  c = load(name)
  assert c.batch_size == 16 and c.optim.learning_rate == 1e-4
  paper = load(name, "paper")
  assert paper.labeling.eps_on == "log_prob" and paper.model.kernel_size == 3
  assert load(name, "runlocal").num_steps <= 20
  with pytest.raises(ValueError, match="variant"):
    load(name, "nonsense")


def test_dataset_values_from_the_paper():
  t, a = load("thumos14"), load("anet13")
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
  c = load("ablations", "thumos14/table2/row1")
  assert not c.labeling.snippet_clustering and not c.inference.cat
  assert c.data.num_segments == 750
  with pytest.raises(KeyError, match="unknown ablation"):
    ablations.apply(defaults.base_config(), "table2/row99")


def test_set_dotted_sets_nested_keys_and_rejects_typos():
  from case_jax import defaults
  c = defaults.base_config()
  defaults.set_dotted(c, {"model.num_clusters": 32, "seed": 7})
  assert c.model.num_clusters == 32 and c.seed == 7
  for bad in ("model.num_cluster", "modle.num_clusters"):
    with pytest.raises(KeyError, match=bad):
      defaults.set_dotted(c, {bad: 1})
