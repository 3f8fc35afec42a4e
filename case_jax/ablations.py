"""Every ablation row of the paper's Tables 2, 3, 4, 5, 9 and 10 as a named
set of config overrides (``"table2/row4"`` ...).

Use: ``--config=configs/ablations.py:thumos14/table2/row4`` or
``apply(config, "table2/row4")``; ``python -m case_jax.ablations`` lists them
with the command-line flags each one amounts to.  Paper numbers (THUMOS14
mAP AVG 0.1:0.7) are given for reference.
"""
from __future__ import annotations

_NO_TSCL = {"labeling.colabel_topk": False, "labeling.colabel_clusters": False,
            "labeling.colabel_cluster_cls": False}
_BASELINE = {"labeling.snippet_clustering": False,
             "labeling.cluster_classification": False, "labeling.ddcl": False,
             "inference.cat": False}


def _table2(scc, ccc, ddcl, tscl, cat):
  o = {"labeling.snippet_clustering": scc, "labeling.cluster_classification": ccc,
       "labeling.ddcl": ddcl, "inference.cat": cat}
  if not tscl:
    o.update(_NO_TSCL)
  return o


ABLATIONS: dict[str, dict] = {
    # Table 2: SCC, CCC, DDCL, TSCL, CAT (paper mAP / ACC).
    "table2/row1": _table2(False, False, False, False, False),  # 38.3 / 73.6
    "table2/row2": _table2(True, False, False, False, False),   # 40.3 / 74.5
    "table2/row3": _table2(True, False, False, True, False),    # 42.0 / 75.4
    "table2/row4": _table2(True, True, False, True, False),     # 43.1 / 75.9
    "table2/row5": _table2(True, True, False, True, True),      # 45.4 / 77.1
    "table2/row6": _table2(True, True, True, False, True),      # 44.1 / 76.7
    "table2/row7": _table2(True, True, True, True, False),      # 43.9 / 76.5
    "table2/row8": _table2(True, True, True, True, True),       # 46.2 / 77.5
    # Table 3: number of clusters K^C (0 = the baseline, Table 2 row 1).
    **{f"table3/k{k}": {"model.num_clusters": k} for k in (2, 4, 8, 16, 32, 64)},
    "table3/k0": dict(_BASELINE, **_NO_TSCL),
    # Table 4: SCC's labeling: PL = no distribution constraint; hard = argmax.
    "table4/pl_hard": {"labeling.dcl": False, "labeling.hard": True},
    "table4/pl_soft": {"labeling.dcl": False, "labeling.hard": False},
    "table4/dcl_hard": {"labeling.dcl": True, "labeling.hard": True},
    "table4/dcl_soft": {"labeling.dcl": True, "labeling.hard": False},
    # Table 5: CCC; the columns are inference.fg_score attention/cluster/fused.
    "table5/case": {},                                           # 43.9 44.1 46.2
    "table5/lambda_r0": {"loss.lambda_r": 0.0},                  # 43.4 43.1 44.6
    "table5/beta_half": {"labeling.beta_r": "uniform"},          # 42.7 42.2 43.5
    # Table 9: the baseline's branches (VTB, ATB, GBCE).
    "table9/row1": dict(_BASELINE, **{"labeling.use_attention": False}),  # 31.0
    "table9/row2": dict(_BASELINE, **{"loss.attention": "bce"}),          # 38.0
    "table9/row3": dict(_BASELINE),                                       # 38.3
    # Table 10: TSCL per step, Eq. 24 (top-k), 22 (Q^R), 20 (Q^C).
    **{f"table10/row{i}": {"labeling.colabel_topk": e24,
                           "labeling.colabel_cluster_cls": e22,
                           "labeling.colabel_clusters": e20}
       for i, (e24, e22, e20) in enumerate(
           [(False, False, False), (True, False, False), (True, True, False),
            (True, False, True), (False, True, True), (True, True, True)], 1)},
}


def apply(config, name: str):
  """Applies the override set ``name`` to ``config`` (in place) and returns it."""
  if name not in ABLATIONS:
    raise KeyError(f"unknown ablation {name!r}; known: {', '.join(sorted(ABLATIONS))}")
  for dotted, value in ABLATIONS[name].items():
    node = config
    *parents, leaf = dotted.split(".")
    for p in parents:
      node = node[p]
    if leaf not in node:
      raise KeyError(f"ablation {name!r} sets unknown config key {dotted!r}")
    node[leaf] = value
  return config


def as_flags(name: str) -> str:
  return " ".join(f"--config.{k}={v}" for k, v in ABLATIONS[name].items())


if __name__ == "__main__":
  for key in ABLATIONS:
    print(f"{key:22s} {as_flags(key)}")
