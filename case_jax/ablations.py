"""Every ablation row of the paper's Tables 2, 3, 4, 5, 9 and 10 as a named
set of config overrides (``"table2/row4"`` ...).

Use: ``--config=configs/ablations.py:thumos14/table2/row4`` or
``apply(config, "table2/row4")``; ``python -m case_jax.ablations`` lists them
with the command-line flags each one amounts to.

``TABLES`` describes each table in the paper's shape: its switch columns,
the preset of each row with the row's cells, and the paper's THUMOS14
numbers (mAP = AVG over tIoU 0.1:0.7, ACC = F&B snippet accuracy, in %).
``python -m case_jax.tools.ablate --table=N`` trains and fills one in.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

from case_jax.errors import ConfigError, UserError, run_reporting


class UnknownAblation(UserError, KeyError):
  """An ablation preset name that ABLATIONS does not have."""

  def __str__(self):  # KeyError would quote the whole message
    return str(self.args[0])

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
    # Table 3: number of clusters K^C (0 = the baseline, Table 2 row 1).  Its
    # K^C = 16 entry (40.3) is Table 2 row 2 (SCC only), and K^C = 2 is "0.7%
    # below the baseline": the rows vary K^C on the SCC-only model.
    **{f"table3/k{k}": dict(_table2(True, False, False, False, False),
                            **{"model.num_clusters": k})
       for k in (2, 4, 8, 16, 32, 48, 64)},
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
    # Table 9: the baseline's branches (VTB, ATB, GBCE); row 3 is the
    # baseline of Table 2 row 1 (38.3), without any co-labeling.
    "table9/row1": dict(_BASELINE, **_NO_TSCL, **{"labeling.use_attention": False}),  # 31.0
    "table9/row2": dict(_BASELINE, **_NO_TSCL, **{"loss.attention": "bce"}),  # 38.0
    "table9/row3": dict(_BASELINE, **_NO_TSCL),                               # 38.3
    # Table 10: TSCL per step, Eq. 24 (top-k), 22 (Q^R), 20 (Q^C).
    **{f"table10/row{i}": {"labeling.colabel_topk": e24,
                           "labeling.colabel_cluster_cls": e22,
                           "labeling.colabel_clusters": e20}
       for i, (e24, e22, e20) in enumerate(
           [(False, False, False), (True, False, False), (True, True, False),
            (True, False, True), (False, True, True), (True, True, True)], 1)},
}


# =============================================================================
# The tables in the paper's shape (python -m case_jax.tools.ablate).
# =============================================================================
@dataclasses.dataclass(frozen=True)
class Row:
  preset: str                # key of ABLATIONS, e.g. "table2/row1"
  cells: tuple[str, ...]     # the row's switch cells, as the paper prints them
  paper: dict                # the paper's THUMOS14 numbers, by column header

  @property
  def name(self) -> str:     # "row1", "k16", "pl_hard" (for --rows)
    return self.preset.split("/", 1)[1]


@dataclasses.dataclass(frozen=True)
class Table:
  number: int
  caption: str
  columns: tuple[str, ...]   # switch columns
  rows: tuple[Row, ...]
  # Metric columns beyond mAP@t / AVG / ACC: (header, metrics key, scale).
  extra: tuple = ()
  # Table 5: one training, several evaluations; (header, name, overrides).
  evaluations: tuple = ()

  def select(self, names=None) -> tuple[Row, ...]:
    """The rows named in ``names`` ("row1", "table2/row1"; None = all), in
    the paper's order; an unknown name raises ConfigError (a ValueError)
    listing the known."""
    if not names:
      return self.rows
    by_name = {r.name: r for r in self.rows}
    wanted = set()
    for n in names:
      n = n.strip()
      n = n.split("/", 1)[1] if n.startswith(f"table{self.number}/") else n
      if n not in by_name:
        raise ConfigError(f"Table {self.number} has no row {n!r}; its rows are "
                         f"{', '.join(by_name)}")
      wanted.add(n)
    return tuple(r for r in self.rows if r.name in wanted)


_Y = "\u2713"  # a check mark, as the paper's tables


def _marks(*on) -> tuple[str, ...]:
  return tuple(_Y if x else "" for x in on)


# Table 5's columns: the foreground score used at test time (with CAT).
_FG = tuple((header, f"fg_{how}", {"inference.cat": True, "inference.fg_score": how})
            for header, how in (("P^A", "attention"), ("P\u0302^A", "cluster"),
                                ("P\u0308^A", "fused")))

TABLES: dict[int, Table] = {t.number: t for t in (
    Table(2, "Contribution of each component", ("SCC", "CCC", "DDCL", "TSCL", "CAT"),
          tuple(Row(f"table2/row{i}", _marks(*on), dict(AVG=m, ACC=a))
                for i, (on, m, a) in enumerate([
                    ((0, 0, 0, 0, 0), 38.3, 73.6), ((1, 0, 0, 0, 0), 40.3, 74.5),
                    ((1, 0, 0, 1, 0), 42.0, 75.4), ((1, 1, 0, 1, 0), 43.1, 75.9),
                    ((1, 1, 0, 1, 1), 45.4, 77.1), ((1, 1, 1, 0, 1), 44.1, 76.7),
                    ((1, 1, 1, 1, 0), 43.9, 76.5), ((1, 1, 1, 1, 1), 46.2, 77.5)], 1))),
    Table(3, "The effect of K^C (0 = the baseline; others on SCC only)", ("K^C",),
          tuple(Row(f"table3/k{k}", (str(k),), dict(AVG=m)) for k, m in
                [(0, 38.3), (2, 37.6), (4, 38.6), (8, 39.6), (16, 40.3), (32, 40.1),
                 (48, 39.9), (64, 39.9)])),
    Table(4, "DCL of SCC: PL = no distribution constraint; Hard = one-hot",
          ("labeling",),
          tuple(Row(f"table4/{n}", (label,),
                    {"AVG": m, "H(P^C)": h, "H(mean P^C)": hm})
                for n, label, m, h, hm in [
                    ("pl_hard", "PL (Hard)", 40.8, 0.01, 0.01),
                    ("pl_soft", "PL (Soft)", 41.2, 2.77, 2.77),
                    ("dcl_hard", "DCL (Hard)", 44.7, 1.25, 2.75),
                    ("dcl_soft", "DCL (Soft)", 46.2, 1.37, 2.76)]),
          extra=(("H(P^C)", "test_H_pc", 1.0), ("H(mean P^C)", "test_H_mean_pc", 1.0))),
    Table(5, "The effect of CCC, evaluated with P^A, P\u0302^A and P\u0308^A",
          ("\u03bb_R", "\u03b2^R"),
          (Row("table5/case", ("0.3", "Eq. 12"),
               {"P^A": 43.9, "P\u0302^A": 44.1, "P\u0308^A": 46.2}),
           Row("table5/lambda_r0", ("0", "Eq. 12"),
               {"P^A": 43.4, "P\u0302^A": 43.1, "P\u0308^A": 44.6}),
           Row("table5/beta_half", ("0.3", "[0.5, 0.5]"),
               {"P^A": 42.7, "P\u0302^A": 42.2, "P\u0308^A": 43.5})),
          evaluations=_FG),
    Table(9, "The baseline's branches", ("VTB", "ATB", "GBCE"),
          tuple(Row(f"table9/row{i}", _marks(*on), dict(AVG=m)) for i, (on, m) in
                enumerate([((1, 0, 0), 31.0), ((1, 1, 0), 38.0), ((1, 1, 1), 38.3)], 1))),
    Table(10, "TSCL per pseudo-labeling step", ("Eq. 24", "Eq. 22", "Eq. 20"),
          tuple(Row(f"table10/row{i}", _marks(*on), dict(AVG=m)) for i, (on, m) in
                enumerate([((0, 0, 0), 44.1), ((1, 0, 0), 44.7), ((1, 1, 0), 45.3),
                           ((1, 0, 1), 45.7), ((0, 1, 1), 45.6), ((1, 1, 1), 46.2)], 1))),
)}


def table(number) -> Table:
  """``TABLES[number]`` with a clear error for a table that has no presets."""
  try:
    return TABLES[int(number)]
  except (KeyError, ValueError, TypeError):
    raise ConfigError(f"no ablation table {number!r}; tables with presets: "
                     f"{', '.join(map(str, TABLES))}") from None


def apply(config, name: str):
  """Applies the override set ``name`` to ``config`` (in place) and returns it."""
  if name not in ABLATIONS:
    raise UnknownAblation(f"unknown ablation {name!r}; known: "
                          f"{', '.join(sorted(ABLATIONS))}")
  from case_jax.defaults import set_dotted
  return set_dotted(config, ABLATIONS[name], what=f"ablation {name!r}")


def as_flags(name: str) -> str:
  return " ".join(f"--config.{k}={v}" for k, v in ABLATIONS[name].items())


def main(argv=None) -> int:
  """Lists the presets (all, or those of --table) with their flags."""
  parser = argparse.ArgumentParser(
      prog="python -m case_jax.ablations",
      description="List the ablation presets of the paper's tables and the "
                  "--config.KEY=VALUE flags each one amounts to; use one with "
                  "--config=configs/ablations.py:<dataset>/<preset>.")
  parser.add_argument("--table", help="only this table's presets (2, 3, 4, 5, "
                                      "9 or 10)")
  parser.add_argument("--verbose", action="store_true",
                      help="show the traceback of a user error")
  args = parser.parse_args(argv)

  def list_presets():
    names = ([r.preset for r in table(args.table).rows] if args.table
             else list(ABLATIONS))
    for key in names:
      sys.stdout.write(f"{key:22s} {as_flags(key)}\n")
    return 0
  return run_reporting(list_presets, prog="case_jax.ablations",
                       verbose=args.verbose)


if __name__ == "__main__":
  sys.exit(main())
