"""The collectives (all-reduce, all-gather, ...) of a compiled XLA program,
read off its optimised HLO text: how many run per step and how many bytes
they move (benchmarks/scaling.py).
"""
from __future__ import annotations

import re

import numpy as np

DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
                "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8}
COLLECTIVE_OPS = ("all-reduce", "all-reduce-start", "all-gather", "all-gather-start",
                "reduce-scatter", "collective-permute", "collective-permute-start",
                "all-to-all")
_COMP_RE = re.compile(r"^(ENTRY )?%(\S+) \(.*\{\s*$")
_OP_RE = re.compile(r"^\s*(?:ROOT )?%\S+ = (?P<shape>.+?) (?P<op>[a-z\-]+)\(")


def _shape_bytes(shape: str) -> int:
  """Bytes of an HLO shape string, e.g. '(f32[16,512]{1,0}, f32[])'."""
  total = 0
  for dtype, dims in re.findall(r"\b([a-z]+\d*)\[([\d,]*)\]", shape):
    if dtype in DTYPE_BYTES:
      total += DTYPE_BYTES[dtype] * int(np.prod([int(d) for d in dims.split(",") if d]))
  return total


def count(hlo: str, num_devices: int) -> dict:
  """Collectives of one device's optimised HLO program.

  Returns per kind ("all-reduce", "all-gather", ...): ``static`` (ops in the
  text), ``executed`` (per step: an op inside a while body counts once per
  known trip), ``bytes`` (per step and device: the operands' sizes; for an
  all-reduce the result shape, for an all-gather the result / n), plus
  ``unknown_trip_loops`` (collectives in loops of unknown trip count,
  counted once).
  """
  comps, edges, name = {}, {}, None
  for line in hlo.splitlines():
    m = _COMP_RE.match(line)
    if m:
      name = "ENTRY" if m.group(1) else m.group(2)
      comps[name], edges[name] = [], []
      continue
    if name is None or line.startswith("}"):
      continue
    op = _OP_RE.match(line)
    if not op:
      continue
    kind = op.group("op")
    if kind in COLLECTIVE_OPS:
      nbytes = _shape_bytes(op.group("shape"))
      if kind.startswith("all-gather"):
        nbytes //= max(num_devices, 1)   # the result is n operands
      comps[name].append((kind.replace("-start", ""), nbytes))
    elif kind == "while":
      trip = re.search(r'"known_trip_count":\{"n":"(\d+)"', line)
      trip = int(trip.group(1)) if trip else None
      for key, extra in (("body", 0), ("condition", 1)):
        callee = re.search(key + r"=%([\w.\-]+)", line)
        if callee:
          edges[name].append((callee.group(1), None if trip is None else trip + extra))
    else:
      # fusions, calls, conditionals: executed (at most) once when reached
      callees = re.findall(r"(?:to_apply|calls|true_computation|false_computation)"
                           r"=%([\w.\-]+)", line)
      for group in re.findall(r"branch_computations=\{([^}]*)\}", line):
        callees += re.findall(r"%([\w.\-]+)", group)
      edges[name].extend((c, 1) for c in callees)
  out: dict = {"unknown_trip_loops": 0}
  stack = [("ENTRY", 1, False)]
  while stack:   # the call graph is a DAG: walk every path from ENTRY
    comp, mult, unknown = stack.pop()
    for kind, nbytes in comps.get(comp, ()):
      d = out.setdefault(kind, {"static": 0, "executed": 0, "bytes": 0})
      d["static"] += 1
      d["executed"] += mult
      d["bytes"] += mult * nbytes
      out["unknown_trip_loops"] += int(unknown)
    for callee, trip in edges.get(comp, ()):
      stack.append((callee, mult * (1 if trip is None else trip),
                    unknown or trip is None))
  return out


def executed(c: dict) -> int:
  return sum(d["executed"] for d in c.values() if isinstance(d, dict))


ABBREV = {"all-reduce": "AR", "all-gather": "AG", "reduce-scatter": "RS",
           "all-to-all": "A2A", "collective-permute": "CP"}


def describe(c: dict) -> str:
  """'ops executed (static) / KB' for all-reduce (+ all-gather)."""
  if not c:
    return "-"
  parts = []
  for kind in ("all-reduce", "all-gather", "reduce-scatter", "all-to-all",
               "collective-permute"):
    if kind in c:
      d = c[kind]
      parts.append(f"{d['executed']}({d['static']}) {ABBREV[kind]}")
  nbytes = sum(d["bytes"] for k, d in c.items() if isinstance(d, dict))
  return (" + ".join(parts) or "0") + f", {nbytes / 1e6:.2f} MB"
