"""The CASE network (paper §3.1-3.2, E.3; released code: notes §1).

Per stream (RGB and flow, separate parameters), for features x of shape
(B, T, D):

    cas  = classifier(relu(cas_encoder(x)))          (B, T, K^V)  T-CAS logits
    emb  = relu(att_encoder(x))                      (B, T, E)    embeddings Z
    att  = sigmoid(attention(emb))                   (B, T)       P^A
    clu  = temp * normalize(emb) @ prototypes^T      (B, T, K^C)  cosine logits

The attention and the clusters share ``att_encoder`` (released and paper).
``cluster_encoder="separate"`` gives the clusters (and the embeddings Z that
cluster classification reads) an encoder of their own, ``clu_encoder``: an
ablation of that sharing, so L_C and L_R no longer shape P^A's features.

The prototypes are used as they are: the train step and inference replace
them by their row-normalised version outside the gradient first
(``normalize_prototypes``), as the released code does in place.
Encoders are temporal convolutions of ``kernel_size`` (released: 1, i.e. a
per-snippet dense layer).

``model.streams`` selects the streams ("rgb,flow" as released, or one of
them): a one-stream model has only that stream's parameters and outputs,
and every two-stream fusion downstream is then that stream's own value
(``labeling.fuse_streams``).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from case_jax.errors import ConfigError
from case_jax.norms import l2_normalize

STREAMS = ("rgb", "flow")


def parse_streams(spec: str) -> tuple[str, ...]:
  """``model.streams`` ("rgb,flow", "rgb" or "flow") -> the streams, in
  ``STREAMS`` order."""
  names = [s.strip() for s in str(spec).split(",") if s.strip()]
  if not names or any(n not in STREAMS for n in names) or len(set(names)) != len(names):
    raise ValueError(f"model.streams must be 'rgb,flow', 'rgb' or 'flow', got {spec!r}")
  return tuple(s for s in STREAMS if s in names)


class StreamOutputs(NamedTuple):
  cas: jax.Array   # (B, T, K^V) class logits
  att: jax.Array   # (B, T) attention in (0, 1)
  clu: jax.Array   # (B, T, K^C) cluster logits, temp * cosine
  emb: jax.Array   # (B, T, E) post-ReLU embeddings (not normalised)


def _torch_uniform(fan_in: int):
  """PyTorch's default Conv1d/Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


def _bf16_matmul(x, w):
  """x @ w as bf16 x bf16 -> f32 (x: (..., D) any float, w: (D, F))."""
  return jax.lax.dot_general(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16),
                             (((x.ndim - 1,), (0,)), ((), ())),
                             preferred_element_type=jnp.float32)


@jax.custom_vjp
def bf16_dense(x, w):
  """Dense product with bf16 operands and f32 accumulation, AMX-friendly.

  Why a custom VJP: XLA:CPU (jaxlib 0.10) sends a dot to its AMX kernels
  (YNNPACK) only when it is bf16 x bf16 -> f32 with a row-major canonical
  layout.  Flax's nn.Dense(dtype=bf16) emits bf16 -> bf16 dots, which XLA
  upcasts to f32, and autodiff's weight gradient of a (N, D) operand has a
  column-major left side that falls back to XLA's own f32 dot.  Here the
  forward, input-gradient and weight-gradient products are all canonical
  (benchmarks/train_step.py measures the difference).
  """
  return _bf16_matmul(x, w)


def _bf16_dense_fwd(x, w):
  xb, wb = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
  # Zero-size tags carry the original dtypes to the backward pass.
  return _bf16_matmul(xb, wb), (xb, wb, jnp.zeros((0,), x.dtype),
                                jnp.zeros((0,), w.dtype))


def _bf16_dense_bwd(res, g):
  xb, wb, x_tag, w_tag = res
  gb = g.astype(jnp.bfloat16)
  dx = jax.lax.dot_general(gb, wb, (((gb.ndim - 1,), (1,)), ((), ())),
                           preferred_element_type=jnp.float32)
  # Contract over (B, T) of 3-d operands: XLA then lays the product out
  # canonically instead of using a column-major (N, D) left side.
  x3 = xb.reshape((-1,) + xb.shape[-2:]) if xb.ndim >= 2 else xb[None, None]
  g3 = gb.reshape((-1,) + gb.shape[-2:]) if gb.ndim >= 2 else gb[None, None]
  dw = jnp.einsum("btd,btj->dj", x3, g3, preferred_element_type=jnp.float32)
  return dx.astype(x_tag.dtype), dw.astype(w_tag.dtype)


bf16_dense.defvjp(_bf16_dense_fwd, _bf16_dense_bwd)


def _bf16_dot_general(x, w, dimension_numbers, precision=None,
                      preferred_element_type=None):
  (lc, rc), (lb, rb) = dimension_numbers
  if tuple(lc) != (x.ndim - 1,) or tuple(rc) != (0,) or lb or rb:
    raise ValueError(f"bf16 dense expects a plain x @ w, got {dimension_numbers}")
  return bf16_dense(x, w)


def _layer(features: int, in_dim: int, kernel_size: int, init: str,
           name: str, dtype: Any) -> nn.Module:
  """A temporal conv (kernel_size > 1) or per-snippet dense layer."""
  fan_in = in_dim * kernel_size
  _check_choice("init", init, INIT_SCHEMES)
  if init == "pytorch":
    kw = dict(kernel_init=_torch_uniform(fan_in), bias_init=_torch_uniform(fan_in))
  else:
    kw = {}
  if kernel_size == 1 and dtype == jnp.bfloat16 and features >= 8:
    # f32 params, bias and output; bf16 operands with f32 accumulation.
    return nn.Dense(features, name=name, dot_general=_bf16_dot_general, **kw)
  if kernel_size == 1:
    return nn.Dense(features, name=name, dtype=dtype, **kw)
  return nn.Conv(features, kernel_size=(kernel_size,), padding="SAME", name=name,
                 dtype=dtype, **kw)


class StreamFields(nn.Module):
  """The hyper-parameters of a stream, declared once for StreamNet and
  CASEModel (which passes them on to its two streams)."""
  num_classes: int
  embed_dim: int = 512
  num_clusters: int = 16
  cluster_temp: float = 10.0
  kernel_size: int = 1
  init_scheme: str = "pytorch"
  dtype: Any = None        # computation dtype (e.g. bfloat16); params stay f32
  cluster_encoder: str = "shared"   # "shared" with the attention | "separate"

  def stream_fields(self) -> dict:
    """These fields' values, by name."""
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(StreamFields)
            if f.name not in ("parent", "name")}


class StreamNet(StreamFields):
  """One stream: CAS branch, attention branch and cosine cluster head."""

  @nn.compact
  def __call__(self, x: jax.Array) -> StreamOutputs:
    d = x.shape[-1]
    h = nn.relu(_layer(self.embed_dim, d, self.kernel_size, self.init_scheme,
                       "cas_encoder", self.dtype)(x))
    cas = _layer(self.num_classes, self.embed_dim, 1, self.init_scheme, "classifier",
                 self.dtype)(h)
    emb = nn.relu(_layer(self.embed_dim, d, self.kernel_size, self.init_scheme,
                         "att_encoder", self.dtype)(x))
    att = nn.sigmoid(_layer(1, self.embed_dim, 1, self.init_scheme, "attention",
                            self.dtype)(emb))[..., 0]
    if self.cluster_encoder == "separate":
      emb = nn.relu(_layer(self.embed_dim, d, self.kernel_size, self.init_scheme,
                           "clu_encoder", self.dtype)(x))
    else:
      _check_choice("cluster_encoder", self.cluster_encoder, CLUSTER_ENCODERS)
    proto_init = (_torch_uniform(self.embed_dim) if self.init_scheme == "pytorch"
                  else nn.initializers.lecun_normal())
    protos = self.param("prototypes", proto_init,
                        (self.num_clusters, self.embed_dim))
    emb32 = emb.astype(jnp.float32)
    clu = self.cluster_temp * l2_normalize(emb32) @ protos.T
    return StreamOutputs(cas.astype(jnp.float32), att.astype(jnp.float32), clu,
                         emb32)


class CASEModel(StreamFields):
  """Independent streams (``streams``, default both); inputs rgb, flow of
  shape (B, T, D_s); the input of a stream the model lacks is ignored (may
  be None).  Returns {stream: StreamOutputs}, in ``STREAMS`` order."""
  streams: tuple = STREAMS

  @nn.compact
  def __call__(self, rgb: jax.Array, flow: jax.Array | None = None
               ) -> dict[str, StreamOutputs]:
    kw = self.stream_fields()
    inputs = {"rgb": rgb, "flow": flow}
    return {s: StreamNet(name=s, **kw)(inputs[s]) for s in self.streams}


_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}
INIT_SCHEMES = ("pytorch", "flax")
CLUSTER_ENCODERS = ("shared", "separate")


def _check_choice(key: str, value, allowed, error=ValueError) -> None:
  """``error`` naming model.<key> and its choices unless value is one."""
  if value not in allowed:
    raise error(f"model.{key} must be one of {', '.join(allowed)}; got "
                f"{value!r} (--config.model.{key}=...)")


def fields_from(model_cfg) -> dict:
  """StreamFields values (all but num_classes) from ``config.model``: the one
  mapping of its key names and dtype strings onto the model's fields.  A
  value outside its choices is a ConfigError naming the key and the choices
  (reported in one line by the entry points)."""
  name = model_cfg.get("dtype", "float32")
  for key, value, allowed in (
      ("dtype", name, tuple(_DTYPES)),
      ("init", model_cfg.init, INIT_SCHEMES),
      ("cluster_encoder", model_cfg.get("cluster_encoder", "shared"),
       CLUSTER_ENCODERS)):
    _check_choice(key, value, allowed, ConfigError)
  return dict(embed_dim=model_cfg.embed_dim, num_clusters=model_cfg.num_clusters,
              cluster_temp=model_cfg.cluster_temp,
              kernel_size=model_cfg.kernel_size, init_scheme=model_cfg.init,
              dtype=_DTYPES[name],
              cluster_encoder=model_cfg.get("cluster_encoder", "shared"))


def from_config(model_cfg, num_classes: int) -> CASEModel:
  """The CASEModel of ``config.model`` for ``num_classes`` classes."""
  return CASEModel(num_classes=num_classes,
                   streams=parse_streams(model_cfg.get("streams", "rgb,flow")),
                   **fields_from(model_cfg))


def normalize_prototypes(params):
  """Row-normalises every ``prototypes`` leaf, outside the gradient.

  The released head does ``W <- W / ||W||`` in place under no_grad before each
  forward: the loss sees unit prototypes, the gradient ignores the
  normalisation's Jacobian, and Adam then updates the normalised W.  Apply it
  to the parameters *before* differentiating (never inside the loss).
  """
  def fix(path, leaf):
    if path and getattr(path[-1], "key", None) == "prototypes":
      # Not norms.l2_normalize: its rsqrt form changes the last bits of the
      # trained parameters (the golden runs), and no gradient flows here.
      return leaf / jnp.maximum(jnp.linalg.norm(leaf, axis=-1, keepdims=True), 1e-12)
    return leaf
  return jax.tree_util.tree_map_with_path(fix, params)
