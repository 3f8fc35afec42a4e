"""Import the released PyTorch checkpoint into a case_jax workdir, without torch.

    python -m case_jax.tools.import_torch best_model.pkl cls_gt.npy --out=WORKDIR \
        [--classes=THUMOS14|classes.txt] [--config=configs/thumos14.py] [--step=0]
    python -m case_jax.main --config=configs/thumos14.py --mode=evaluate \
        --workdir=WORKDIR --config.data.root=/data/THUMOS14

WORKDIR then holds ``checkpoints/<step>/`` (an Orbax TrainState: the imported
parameters, Q^R from ``cls_gt.npy``, a fresh optimiser state) and
``run.json`` (classes, feature dims), which is what --mode=evaluate and
--mode=predict read.

Reading: case_jax/tools/torch_file.py (a restricted unpickler: torch is
never imported and a pickled global other than a tensor rebuild is refused).

Key mapping (notes §1), for each stream s in {rgb, flow}:

    cas_module_s.0.{weight,bias}    -> params[s]['cas_encoder']
    cas_module_s.2.{weight,bias}    -> params[s]['classifier']
    base_module_s.0.{weight,bias}   -> params[s]['att_encoder']
    att_module_s.{weight,bias}      -> params[s]['attention']
    clu_head_s.prototypes.weight    -> params[s]['prototypes']    (K^C, E) as is

A Conv1d weight (out, in, k) becomes a Flax Dense kernel ``W[:, :, 0].T``
(in, out) when k = 1, or a Flax Conv kernel ``W.transpose(2, 1, 0)``
(k, in, out) otherwise; biases are copied.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from typing import Mapping, Optional, Sequence

import numpy as np

from case_jax import errors
from case_jax.tools.torch_file import (BadCheckpoint, find_state_dict,
                                       load_torch_file)

STREAMS = ("rgb", "flow")
PROG = "case_jax.tools.import_torch"


class OutputExists(errors.UserError, FileExistsError):
  """--out already holds checkpoints (and --overwrite was not given)."""


# ---------------------------------------------------------------------------
# State dict -> Flax params.
# ---------------------------------------------------------------------------
def _strip_prefix(sd: dict) -> dict:
  """Drops a DataParallel 'module.' prefix when every key has it."""
  if sd and all(k.startswith("module.") for k in sd):
    return {k[len("module."):]: v for k, v in sd.items()}
  return sd


def state_dict_to_params(state_dict: Mapping[str, np.ndarray],
                         kernel_size: int = 1) -> dict:
  """Released state dict -> the case_jax param tree (numpy float32).

  Checks every expected key and the shapes' consistency; raises BadCheckpoint
  (a ValueError)
  naming the missing keys, the unexpected extra keys and any bad shape.
  """
  sd = _strip_prefix({str(k): np.asarray(v) for k, v in state_dict.items()})
  layers = {"cas_encoder": "cas_module_{s}.0", "classifier": "cas_module_{s}.2",
            "att_encoder": "base_module_{s}.0", "attention": "att_module_{s}"}
  expected = []
  for s in STREAMS:
    for pattern in layers.values():
      expected += [pattern.format(s=s) + ".weight", pattern.format(s=s) + ".bias"]
    expected.append(f"clu_head_{s}.prototypes.weight")
  missing = [k for k in expected if k not in sd]
  extra = sorted(set(sd) - set(expected))
  if missing:
    raise BadCheckpoint(
        f"state dict is missing {len(missing)} expected key(s): {missing}"
        + (f"; it has unexpected key(s): {extra}" if extra else "")
        + ". Is this the CASE best_model.pkl (notes §1 lists the keys)?")
  if extra:
    raise BadCheckpoint(f"state dict has unexpected key(s) {extra} besides the CASE "
                     "keys: not the released CASE model?")
  problems = []
  params = {}
  for s in STREAMS:
    w = {name: sd[pattern.format(s=s) + ".weight"] for name, pattern in layers.items()}
    b = {name: sd[pattern.format(s=s) + ".bias"] for name, pattern in layers.items()}
    protos = sd[f"clu_head_{s}.prototypes.weight"]
    enc = w["cas_encoder"]
    if enc.ndim != 3:
      problems.append(f"cas_module_{s}.0.weight has shape {enc.shape}, expected "
                      "(E, D, k) of a Conv1d")
      continue
    e, d = enc.shape[0], enc.shape[1]
    num_classes = w["classifier"].shape[0]
    want = {"cas_encoder": (e, d, kernel_size), "classifier": (num_classes, e, 1),
            "att_encoder": (e, d, kernel_size), "attention": (1, e, 1)}
    for name, shape in want.items():
      key = layers[name].format(s=s)
      if w[name].shape != shape:
        problems.append(f"{key}.weight has shape {w[name].shape}, expected {shape}")
      if b[name].shape != (shape[0],):
        problems.append(f"{key}.bias has shape {b[name].shape}, expected ({shape[0]},)")
    if protos.ndim != 2 or protos.shape[1] != e:
      problems.append(f"clu_head_{s}.prototypes.weight has shape {protos.shape}, "
                      f"expected (K^C, {e})")
    if problems:
      continue
    p = {}
    for name in layers:
      k = w[name].astype(np.float32)
      kernel = k[:, :, 0].T if k.shape[2] == 1 else k.transpose(2, 1, 0)
      p[name] = {"kernel": np.ascontiguousarray(kernel),
                 "bias": b[name].astype(np.float32)}
    p["prototypes"] = protos.astype(np.float32)
    params[s] = p
  if not problems and params["rgb"]["prototypes"].shape != params["flow"]["prototypes"].shape:
    problems.append("the rgb and flow prototypes differ in shape")
  if not problems and (params["rgb"]["classifier"]["bias"].shape
                       != params["flow"]["classifier"]["bias"].shape):
    problems.append("the rgb and flow classifiers differ in class count")
  if problems:
    raise BadCheckpoint("state dict shapes do not fit the CASE model:\n  "
                     + "\n  ".join(problems))
  for s in STREAMS:
    for leaf in [params[s]["prototypes"]] + [v for lay in layers for v in params[s][lay].values()]:
      if not np.all(np.isfinite(leaf)):
        raise BadCheckpoint(f"stream {s}: the checkpoint holds NaN or inf values")
  return params


def params_summary(params: dict) -> dict:
  """num_classes, embed_dim, num_clusters, rgb_dim, flow_dim of a param tree."""
  def in_dim(s):
    k = params[s]["cas_encoder"]["kernel"]
    return int(k.shape[-2])
  return {"num_classes": int(params["rgb"]["classifier"]["bias"].shape[0]),
          "embed_dim": int(params["rgb"]["prototypes"].shape[1]),
          "num_clusters": int(params["rgb"]["prototypes"].shape[0]),
          "rgb_dim": in_dim("rgb"), "flow_dim": in_dim("flow")}


def load_q_r(path: str, num_clusters: int) -> np.ndarray:
  if not os.path.isfile(path):
    raise errors.MissingFile(f"{path}: no such Q^R file; pass the released "
                             f"cls_gt.npy (a ({num_clusters}, 2) array)")
  try:
    q = np.load(path, allow_pickle=False)
  except (ValueError, OSError, EOFError) as e:   # not a .npy file
    raise BadCheckpoint(f"{path}: not a numpy .npy array ({e}); pass the "
                        "released cls_gt.npy") from None
  if q.shape != (num_clusters, 2):
    raise BadCheckpoint(f"{path}: Q^R (cls_gt) has shape {q.shape}, expected "
                        f"({num_clusters}, 2) for {num_clusters} prototypes.")
  if not np.all(np.isfinite(q)):
    raise BadCheckpoint(f"{path}: Q^R holds NaN or inf.")
  return q.astype(np.float32)


def load_classes(spec: Optional[str]) -> list:
  """'THUMOS14' (the released order), or a text file of one class per line."""
  if spec is None or spec.upper() == "THUMOS14":
    from case_jax.data import THUMOS14_CLASSES
    return list(THUMOS14_CLASSES)
  if not os.path.exists(spec):
    raise errors.MissingFile(f"--classes {spec!r}: not 'THUMOS14' and no such file "
                             "(expected one class name per line, in the model's "
                             "order).")
  with open(spec) as f:
    names = [line.strip() for line in f if line.strip()]
  repeated = sorted({n for n in names if names.count(n) > 1})
  if repeated:
    raise errors.ConfigError(f"{spec}: repeated class names {repeated}; list each "
                             "class once")
  return names


# ---------------------------------------------------------------------------
# The import.
# ---------------------------------------------------------------------------
def import_checkpoint(model_path: str, cls_gt_path: str, out: str, cfg, *,
                      classes: Optional[Sequence[str]] = None, step: int = 0,
                      overwrite: bool = False, stream=None) -> dict:
  """Writes ``out/checkpoints/<step>`` and ``out/run.json``; returns run info.

  ``cfg``: the config --mode=evaluate will be run with (model sizes and
  optimiser must agree with the checkpoint).
  """
  import jax
  import jax.numpy as jnp
  from case_jax import checkpoint as ckpt_lib
  from case_jax import model as model_lib
  from case_jax import train

  stream = stream or sys.stdout
  if cfg.model.get("cluster_encoder", "shared") != "shared":
    raise errors.ConfigError(
        "the released checkpoint has one encoder shared by the attention and "
        "the clusters: import it with model.cluster_encoder=shared")
  classes = list(classes) if classes is not None else load_classes(None)
  params = state_dict_to_params(find_state_dict(load_torch_file(model_path), model_path),
                                kernel_size=cfg.model.kernel_size)
  info = params_summary(params)
  q_r = load_q_r(cls_gt_path, info["num_clusters"])
  if len(classes) != info["num_classes"]:
    raise errors.ConfigError(
        f"{model_path} classifies {info['num_classes']} classes but "
        f"{len(classes)} class names were given (--classes): pass a file of "
        f"{info['num_classes']} names, one a line, in the model's order.")
  for key in ("embed_dim", "num_clusters"):
    if cfg.model[key] != info[key]:
      raise errors.ConfigError(f"{model_path} has {key}={info[key]} but the config says "
                       f"model.{key}={cfg.model[key]}; pass a matching --config "
                       f"(or --config.model.{key}={info[key]}) here and to --mode=evaluate.")

  ckpt_dir = os.path.join(os.path.abspath(out), "checkpoints")
  if os.path.isdir(ckpt_dir) and os.listdir(ckpt_dir):
    if not overwrite:
      raise OutputExists(f"{ckpt_dir} already holds checkpoints; choose another "
                            "--out or pass --overwrite.")
    shutil.rmtree(ckpt_dir)
  os.makedirs(out, exist_ok=True)

  model = model_lib.from_config(cfg.model, info["num_classes"])
  tx = train.make_optimizer(cfg.optim)
  template = train.create_train_state(cfg, model, tx, rgb_dim=info["rgb_dim"],
                                      flow_dim=info["flow_dim"])
  want = jax.tree_util.tree_structure(template.params)
  got = jax.tree_util.tree_structure(params)
  if want != got:
    raise errors.ConfigError(f"{model_path}: imported param tree {got} does not "
                             f"match the model's {want}; pass the --config the "
                             "checkpoint was trained with")
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(template.params),
                          jax.tree_util.tree_leaves(params)):
    if a.shape != b.shape:
      raise errors.ConfigError(
          f"{model_path}: {jax.tree_util.keystr(path)}: imported shape {b.shape}, "
          f"model expects {a.shape}; pass the --config the checkpoint was "
          "trained with")
  jparams = jax.tree.map(jnp.asarray, params)
  state = template.replace(step=jnp.asarray(step, jnp.int32), params=jparams,
                           opt_state=tx.init(jparams), q_r=jnp.asarray(q_r))
  manager = ckpt_lib.Checkpointer(ckpt_dir)
  manager.save(state, meta={"step": int(step), "imported_from": {
      "model": os.path.abspath(model_path), "cls_gt": os.path.abspath(cls_gt_path)}})
  manager.wait()
  manager.close()
  run_info = {"classes": classes, "rgb_dim": info["rgb_dim"],
              "flow_dim": info["flow_dim"]}
  with open(os.path.join(out, "run.json"), "w") as f:
    json.dump(run_info, f, indent=2)
  stream.write(f"Imported {model_path} ({info['num_classes']} classes, "
               f"E={info['embed_dim']}, K^C={info['num_clusters']}, "
               f"dims rgb {info['rgb_dim']} / flow {info['flow_dim']}) and "
               f"{cls_gt_path} -> {ckpt_dir}/{step}\n")
  return {**run_info, **info, "state": state}


USAGE = (f"usage: python -m {PROG} best_model.pkl cls_gt.npy --out=WORKDIR "
         "[--classes=THUMOS14|FILE] [--config=configs/thumos14.py] "
         "[--config.KEY=VALUE ...] [--step=0] [--overwrite] [--verbose]")


def _help(fv) -> str:
  """--help: the usage, the positional arguments and every flag."""
  lines = [USAGE, "", __doc__.split("\n\n")[0], "",
           "positional arguments:",
           "  best_model.pkl        the released torch.save state dict",
           "  cls_gt.npy            the released Q^R, a (K^C, 2) array", "",
           "flags:"]
  for name in ("out", "classes", "config", "step", "overwrite", "verbose"):
    flag = fv[name]
    lines.append(f"  --{name:<20}{flag.help} (default: {flag.default_as_str or 'none'})")
  lines.append(f"  --{'config.KEY=VALUE':<20}override a config value, as for "
               "python -m case_jax.main")
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  """The CLI; a user error is a short message and exit status 2."""
  argv = list(sys.argv if argv is None else argv)
  return errors.run_reporting(_main, argv, prog=PROG,
                              verbose=errors.wants_verbose(argv[1:]))


def _main(argv: list) -> int:
  from absl import flags
  from ml_collections import config_flags

  from case_jax import defaults
  from case_jax.config_args import check_config_argv

  fv = flags.FlagValues()
  if not any(a in ("-h", "--help", "-help", "--helpfull") for a in argv[1:]):
    check_config_argv(argv[1:], default=defaults.config_path("thumos14"))
  config_flags.DEFINE_config_file("config", defaults.config_path("thumos14"),
                                  "The config --mode=evaluate will use.",
                                  flag_values=fv, lock_config=True, sys_argv=argv)
  flags.DEFINE_string("out", None, "Workdir to create.", flag_values=fv)
  flags.DEFINE_string("classes", "THUMOS14", "'THUMOS14' or a file of class names, "
                      "one a line, in the model's output order.", flag_values=fv)
  flags.DEFINE_integer("step", 0, "Step number recorded in the checkpoint.",
                       flag_values=fv)
  flags.DEFINE_bool("overwrite", False, "Replace existing checkpoints in --out.",
                    flag_values=fv)
  flags.DEFINE_bool("verbose", False, "Show the traceback of a user error.",
                    flag_values=fv)
  if any(a in ("-h", "--help", "-help", "--helpfull") for a in argv[1:]):
    sys.stdout.write(_help(fv))
    return 0
  try:
    rest = fv(argv)
  except flags.Error as e:
    raise errors.ConfigError(f"{e}\n{USAGE}") from None
  if len(rest) != 3 or not fv.out:
    raise errors.ConfigError("give best_model.pkl, cls_gt.npy and --out=WORKDIR "
                             f"(see --help)\n{USAGE}")
  import_checkpoint(rest[1], rest[2], fv.out, fv.config,
                    classes=load_classes(fv.classes), step=fv.step,
                    overwrite=fv.overwrite)
  return 0


if __name__ == "__main__":
  sys.exit(main())
