"""One of the paper's ablation tables, trained and written in its shape.

    python -m case_jax.tools.ablate --config=configs/thumos14.py --table=2 \
        --seeds=3 [--workdir=DIR] [--rows=row1,row8] [--config.num_steps=100 ...]

For each row of Table N (``ablations.TABLES``: Tables 2, 3, 4, 5, 9, 10) the
row's preset is applied to the config and every seed is trained with
case_jax/seeds.py into ``DIR/<table>_<row>/seed_<s>/`` (vmapped over the
seeds when the memory estimate allows).  Then ``DIR/table<N>.md`` and
``.json`` hold the table: the paper's switch columns, mAP at each tIoU, AVG
and ACC (F&B snippet accuracy) as mean ± sample std over the seeds in %,
and the paper's THUMOS14 numbers beside ours.  Table 4 adds H(P^C) and
H(mean P^C) (nats); Table 5 trains each row once per seed and evaluates it
with P^A, P̂^A and P̈^A (inference.fg_score attention / cluster / fused),
one AVG column each.

``--seeds=N`` runs seeds 0..N-1, ``--seeds=0,4,7`` those seeds; without it
``config.seeds`` (or the single ``config.seed``) is used.  ``DIR`` defaults to
``ablate_<config name>``; generated synthetic data, rows and seeds already
trained there are reused, so an interrupted command resumes when rerun
(a row trained with another config is an error, not silently reused).
"""
from __future__ import annotations

import copy
import os
import sys
import time

import jax

from case_jax import (ablations, datasets, defaults, errors,
                      evaluator as evaluator_lib, fileio, runs, seeds as seeds_lib,
                      train, workdir as workdir_lib)

PROG = "case_jax.tools.ablate"
USAGE = (f"usage: python -m {PROG} --config=configs/<dataset>.py --table=N "
         "[--seeds=3|0,4,7] [--workdir=DIR] [--rows=row1,row8] "
         "[--config.KEY=VALUE ...] [--verbose]")


def parse_seed_arg(text) -> list[int]:
  """"3" -> [0, 1, 2]; "0,4" -> [0, 4]; "" / None -> []."""
  if text is None or not str(text).strip():
    return []
  text = str(text).strip()
  if "," not in text:
    try:
      n = int(text)
    except ValueError:
      raise errors.ConfigError(f"--seeds must be a count (3) or a list (0,1,2), "
                               f"got {text!r}") from None
    if n < 1:
      raise errors.ConfigError(f"--seeds must be at least 1, got {n}")
    return list(range(n))
  return seeds_lib.parse_seeds(text)


def _row_dir(workdir: str, row) -> str:
  return os.path.join(workdir, row.preset.replace("/", "_"))


def run_table(cfg, number, workdir: str, *, seeds=None, rows=None, devices=None,
              stream=None, config_name: str = "") -> dict:
  """Trains the rows of Table ``number`` and writes table<N>.md/.json.

  seeds: list of ints (None: cfg.seeds or [cfg.seed]); rows: row names
  ("row1", "k16"; None = all).  Returns {"markdown", "rows": [...], "paths"}.
  Unknown tables and rows raise ConfigError (a ValueError) before anything
  is trained.
  """
  spec = ablations.table(number)
  selected = spec.select(rows)
  stream = stream or sys.stdout
  workdir = workdir_lib.local_workdir(workdir)
  os.makedirs(workdir, exist_ok=True)
  cfg = copy.deepcopy(cfg)
  seed_ids = list(seeds) if seeds else seeds_lib.seed_list(cfg)
  cfg.seeds = ",".join(map(str, seed_ids))
  # Generated data once for every row.
  cfg.data.root = datasets.shared_data_root(cfg, workdir)
  evaluations = tuple((name, ov) for _, name, ov in spec.evaluations)

  results = []
  t0 = time.time()
  for i, row in enumerate(selected, 1):
    stream.write(f"\n##### Table {spec.number} [{i}/{len(selected)}] {row.preset}: "
                 f"{ablations.as_flags(row.preset) or '(the default config)'}  "
                 f"seeds {cfg.seeds}  ({time.time() - t0:.0f}s so far)\n")
    stream.flush()
    row_cfg = ablations.apply(copy.deepcopy(cfg), row.preset)
    out = train.train_and_evaluate(row_cfg, _row_dir(workdir, row),
                                   devices=devices, stream=stream)
    if jax.process_index() == 0:
      out["evaluations"] = evaluate_seeds(row_cfg, _row_dir(workdir, row),
                                          out["seeds"], evaluations, stream)
    results.append(out)
  if jax.process_index() != 0:  # process 0 has the metrics and writes the table
    return {"rows": [r.preset for r in selected], "paths": {}}

  md, data = format_table(spec, selected, results)
  title = (f"Table {spec.number}: {spec.caption}. {config_name or 'config'}, "
           f"{cfg.num_steps} steps, seeds {cfg.seeds}; % as mean ± sample std "
           "over seeds; 'paper' = the paper's THUMOS14 numbers.")
  paths = {"md": os.path.join(workdir, f"table{spec.number}.md"),
           "json": os.path.join(workdir, f"table{spec.number}.json")}
  fileio.write_text(paths["md"], f"{title}\n\n{md}\n")
  fileio.write_json(paths["json"], {
      "table": spec.number, "caption": spec.caption, "config": config_name,
      "num_steps": cfg.num_steps, "seeds": seed_ids, **data})
  stream.write(f"\n{title}\n\n{md}\n\nWrote {paths['md']} and {paths['json']}\n")
  stream.flush()
  return {"markdown": md, "rows": data["rows"], "paths": paths}


def evaluate_seeds(cfg, workdir: str, seeds, evaluations, stream) -> dict:
  """{name: {seed: metrics}}: each seed's final checkpoint evaluated with
  each (name, overrides) of ``evaluations`` (Table 5's fg_score) into
  ``seed_<s>/eval_<name>/``; the config's own evaluation is its eval/."""
  out, shared = {}, None   # one test split and ground truth for all of them
  for name, overrides in evaluations:
    out[name] = {}
    for s in seeds:
      c, d = seeds_lib.seed_config(cfg, s), seeds_lib.seed_dir(workdir, s)
      same = defaults.set_dotted(copy.deepcopy(c), dict(overrides))
      if same.to_json_best_effort() == c.to_json_best_effort():
        done = evaluator_lib.read_eval_metrics(os.path.join(d, "eval"), c.num_steps)
        if done is not None:
          out[name][s] = done
          continue
      if shared is None:
        classes = workdir_lib.read_run_info(d)["classes"]
        shared = evaluator_lib.Evaluator.from_config(c, c.data.root, classes,
                                                     stream=stream)
      out[name][s] = runs.evaluate(c, d, out_name=f"eval_{name}",
                                   overrides=overrides, evaluator=shared,
                                   stream=stream)
  return out


def format_table(spec, rows, results) -> tuple[str, dict]:
  """The markdown table and its JSON (per row: cells, per-seed metrics,
  mean/std by column, the paper's numbers)."""
  first = results[0]["metrics"][results[0]["seeds"][0]]
  if spec.evaluations:   # Table 5: one AVG per evaluation
    metric_cols = [(header, name, "mAP", 100.0)
                   for header, name, _ in spec.evaluations]
  else:
    metric_cols = [(h, None, k, 100.0) for h, k in seeds_lib.metric_columns(first)]
    metric_cols += [(h, None, k, scale) for h, k, scale in spec.extra
                    if k in first]
  paper_cols = [h for h, *_ in metric_cols if any(h in r.paper for r in rows)]
  head = ["Row", *spec.columns, *(h for h, *_ in metric_cols),
          *(f"paper {h}" for h in paper_cols)]
  lines = ["| " + " | ".join(head) + " |",
           "|---|" + ":-:|" * len(spec.columns)
           + "---:|" * (len(metric_cols) + len(paper_cols))]
  out_rows = []
  for row, res in zip(rows, results):
    cells, stats = [], {}
    for header, evaluation, key, scale in metric_cols:
      per_seed = res["evaluations"][evaluation] if evaluation else res["metrics"]
      values = [per_seed[s][key] for s in res["seeds"]]
      mean, std = seeds_lib.mean_std(values)
      stats[header] = {"mean": mean, "std": std, "per_seed": values}
      cells.append(seeds_lib.cell(values, scale))
    paper = [f"{row.paper[h]:g}" if h in row.paper else "" for h in paper_cols]
    label = row.name[3:] if row.name.startswith("row") else row.name
    lines.append("| " + " | ".join([label, *row.cells, *cells, *paper]) + " |")
    out_rows.append({"preset": row.preset, "cells": dict(zip(spec.columns, row.cells)),
                     "overrides": ablations.ABLATIONS[row.preset],
                     "seeds": res["seeds"], "mode": res["mode"], "columns": stats,
                     "paper": row.paper})
  return "\n".join(lines), {"columns": head, "rows": out_rows}


def _define_flags(argv):
  from absl import flags
  from ml_collections import config_flags
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "Path to a configs/<dataset>.py.",
                                  flag_values=fv, lock_config=True, sys_argv=argv)
  flags.DEFINE_string("table", None, "Paper table: 2, 3, 4, 5, 9 or 10.",
                      flag_values=fv)
  flags.DEFINE_string("seeds", None, "A count (3 = seeds 0,1,2) or a list "
                      "(0,4,7); default: config.seeds, else config.seed.",
                      flag_values=fv)
  flags.DEFINE_string("workdir", None, "Default: ablate_<config name>.",
                      flag_values=fv)
  flags.DEFINE_string("rows", None, "Comma-separated rows of the table "
                      "(e.g. row1,row8 or k8,k16); default: all.", flag_values=fv)
  flags.DEFINE_bool("verbose", False, "Show library INFO logs (Orbax, JAX) and "
                    "the traceback of a user error.", flag_values=fv)
  return fv


def _help(fv) -> str:
  """--help: the usage and every flag."""
  lines = [USAGE, "", __doc__.split("\n\n")[0], "", "flags:"]
  for name in ("config", "table", "seeds", "workdir", "rows", "verbose"):
    lines.append(f"  --{name:<20}{fv[name].help}")
  lines.append(f"  --{'config.KEY=VALUE':<20}override a config value, as for "
               "python -m case_jax.main")
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  """The CLI; a user error (bad flag, table, row, seeds, config key) is a
  short message and exit status 2, before anything is trained."""
  argv = list(sys.argv if argv is None else argv)
  return errors.run_reporting(_main, argv, prog=PROG,
                              verbose=errors.wants_verbose(argv[1:]))


def _main(argv: list) -> int:
  from absl import flags, logging

  if any(a in ("-h", "--help", "-help", "--helpfull") for a in argv[1:]):
    sys.stdout.write(_help(_define_flags(argv[:1])))
    return 0
  # ml_collections answers a bad --config with a traceback: check it first.
  from case_jax.config_args import check_config_argv
  check_config_argv(argv[1:])
  fv = _define_flags(argv)
  try:
    rest = fv(argv)
  except flags.Error as e:
    raise errors.ConfigError(f"{e}\n{USAGE}") from None
  if len(rest) > 1:
    raise errors.ConfigError(f"unexpected arguments {rest[1:]}\n{USAGE}")
  missing = [f"--{n}" for n in ("config", "table") if fv[n].value is None]
  if missing:
    raise errors.ConfigError(f"{' and '.join(missing)} required\n{USAGE}")
  from case_jax import distributed
  distributed.maybe_initialize()  # multi-host: before any JAX backend use
  if not fv.verbose:
    logging.set_verbosity(logging.WARNING)
  from ml_collections import config_flags
  config_arg = config_flags.get_config_filename(fv["config"])
  name = os.path.splitext(os.path.basename(config_arg.split(":")[0]))[0]
  if ":" in config_arg:
    name += "_" + config_arg.split(":", 1)[1].replace("/", "_")
  rows = fv.rows.split(",") if fv.rows else None
  spec = ablations.table(fv.table)   # before any training
  spec.select(rows)
  seeds = parse_seed_arg(fv.seeds)
  run_table(fv.config, spec.number, fv.workdir or f"ablate_{name}",
            seeds=seeds, rows=rows, config_name=config_arg)
  return 0


if __name__ == "__main__":
  sys.exit(main())
