"""The synthetic data generator: annotation statistics, the shared vectors
of a seed ("world"), per-video plans and their rendering to features.

TEST AND DEMO DATA ONLY (see ``synthetic``, which writes it to disk).

How each snippet feature (per stream, dimension D, Gaussian noise of std 1)
is built:

* Two streams.  Every class has 2-3 sub-action phases; each (class, phase)
  has its own direction in each stream and is strong in RGB only, in flow
  only, or in both (``phase_strong_in``); elsewhere it is weak.  Either stream
  alone misses some phases, so the streams are partly complementary.
* Context.  Each class has a preferred background scene vector (plus a few
  neutral scenes); a video shows its class's scene with probability
  ``p_preferred_scene`` throughout, foreground and background, strongly in
  RGB.  A video classifier can thus score well from background alone.
* Sub-action phases.  An instance runs through its class's phases in order,
  with phase proportions jittered per instance.
* Shared motion.  A single flow "motion" direction is added to every action
  snippet of every class and to background distractor intervals (Poisson
  count per background second), so flow magnitude alone does not localize.
* Blurred boundaries.  Each instance is weighted by a trapezoid envelope that
  ramps over 1-3 snippets centred on the annotated start and end.
* Nuisance.  A per-video offset vector and slowly varying AR(1) clutter;
  the per-snippet noise itself can be AR(1) over snippets (``noise_rho``).

Amplitudes are matched-filter signal-to-noise ratios (norm of a component
over the per-dimension noise std), so difficulty does not change with D.

Annotation statistics follow the real THUMOS14 ``gt.json`` (ACM-Net copy):
video duration, per-video foreground fraction (about 0.29 on average) and
instance length in seconds are drawn from per-subset quantile tables
(``BUILTIN_STATS``, derived from that file by ``annotation_stats``; pass
``stats=<gt.json>`` to derive them from a file at generation time instead),
and about 14% of videos have two classes.  The number of instances follows
from duration x foreground fraction / instance length.  Time is then scaled
by ``time_scale`` (a linear rescale of every duration and instance, which
keeps the shape of the distributions and the foreground fractions) and
videos longer than ``max_snippets`` are compressed to that length.  With
``instance_lengths="real"`` only the videos are scaled: instances keep their
real length in seconds (the same snippet count as in THUMOS14) and the
foreground fraction is kept, so a video holds fewer instances.

Deterministic per seed: the shared "world" (vectors per class) depends on
the seed and the sizes only, and video k of a subset on (seed, subset, k), so
adding videos leaves earlier ones unchanged.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence

import numpy as np

from case_jax.data.gt_json import read_gt
from case_jax.data.records import FEATURE_FPS, SNIPPET_FRAMES
from case_jax.data.thumos_layout import STREAMS
from case_jax.data.synthetic_signal import (  # noqa: F401 (re-exported)
    SIGNAL_PRESETS, SignalSettings, signal_settings)

SECONDS_PER_SNIPPET = SNIPPET_FRAMES / FEATURE_FPS
QUANTILE_LEVELS = np.linspace(0.0, 1.0, 21)
GT_SUBSET = {"train": "validation", "test": "test"}   # as in the real gt.json

# Structure of the signal model (its amplitudes: synthetic_signal.SignalSettings).
NOISE_STD = 1.0
PHASES_PER_CLASS = (2, 3)
NUM_NEUTRAL_SCENES = 2
CLUTTER_RHO = 0.9
RAMP_SNIPPETS = (1, 2, 3)
MAX_FG_FRACTION = 0.9
MIN_SNIPPETS = 4
# How instance lengths follow time_scale: "scaled" with their video, or
# "real" (real seconds, whatever the video's scale or compression).
INSTANCE_LENGTHS = ("scaled", "real")


def check_instance_lengths(value: str) -> None:
  """ValueError naming the choices unless ``value`` is one of them."""
  if value not in INSTANCE_LENGTHS:
    raise ValueError(f"instance_lengths must be one of {INSTANCE_LENGTHS}, "
                     f"got {value!r}")


class SubsetStats(NamedTuple):
  """Quantiles at QUANTILE_LEVELS of one gt.json subset, and P(2 classes)."""
  duration_s: tuple[float, ...]
  fg_fraction: tuple[float, ...]
  instance_s: tuple[float, ...]
  multi_label: float


# Derived from /work/shared/data/thumos14_acmnet_gt/gt.json by
# annotation_stats() (200 validation / 212 test videos; segments clipped to
# the video, 4 significant digits).
BUILTIN_STATS = {
    "train": SubsetStats(
        duration_s=(8.8, 30.66, 36.88, 51.29, 67.25, 81.07, 100.3, 112.3, 128.4,
                    135.6, 150.4, 168.3, 180.6, 191.1, 210.2, 228.6, 275.9,
                    311.0, 450.4, 600.8, 1174.0),
        fg_fraction=(0.003006, 0.05825, 0.08415, 0.1154, 0.1358, 0.16, 0.1704,
                     0.1887, 0.2009, 0.2112, 0.2253, 0.2445, 0.2687, 0.3146,
                     0.3441, 0.3744, 0.4196, 0.4839, 0.5804, 0.7605, 0.9986),
        instance_s=(0.2, 0.7, 0.9, 1.1, 1.3, 1.5, 1.8, 2.01, 2.3, 2.6, 2.9, 3.3,
                    3.7, 4.4, 5.0, 5.5, 6.2, 7.0, 8.0, 9.7, 118.1),
        multi_label=0.135),
    "test": SubsetStats(
        duration_s=(14.9, 33.56, 47.68, 67.4, 77.57, 96.73, 107.2, 119.0, 128.4,
                    145.8, 161.5, 176.9, 184.7, 205.0, 214.4, 227.9, 245.1,
                    299.6, 412.7, 674.0, 1672.0),
        fg_fraction=(0.01131, 0.03907, 0.0642, 0.07749, 0.1063, 0.1371, 0.1678,
                     0.1875, 0.2106, 0.2337, 0.2563, 0.279, 0.316, 0.3354,
                     0.3634, 0.4105, 0.4476, 0.5147, 0.5697, 0.714, 0.9755),
        instance_s=(0.2, 0.8, 1.1, 1.3, 1.5, 1.7, 1.9, 2.2, 2.5, 2.8, 3.2, 3.6,
                    4.22, 4.9, 5.6, 6.2, 6.86, 7.8, 9.1, 11.5, 86.6),
        multi_label=0.1604),
}

# ActivityNet-shaped tables (used for both 1.2 and 1.3; keys "train" =
# subset training, "test" = validation).  Chosen, not derived from a real
# file (none is shipped here), to match the published totals of release 1.3
# (activity-net.org: 10,024 training videos with 15,410 instances and 4,926
# validation videos with 7,654, i.e. about 1.54 instances per video; ~648 h
# over ~20k videos, i.e. a mean duration near 117 s): long instances that
# cover about half of a video, one activity class per video.
# tests/test_data_synthetic.py checks the generated means against the totals.
_ANET = SubsetStats(
    duration_s=(12.0, 27.0, 37.0, 46.0, 54.0, 62.0, 70.0, 78.0, 85.0, 93.0,
                102.0, 111.0, 119.0, 129.0, 140.0, 151.0, 165.0, 180.0, 200.0,
                225.0, 582.0),
    fg_fraction=(0.04, 0.12, 0.19, 0.25, 0.3, 0.35, 0.4, 0.44, 0.48, 0.52,
                 0.56, 0.6, 0.64, 0.68, 0.72, 0.76, 0.8, 0.84, 0.88, 0.9, 0.9),
    instance_s=(2.0, 6.0, 11.0, 16.0, 21.0, 26.0, 30.0, 35.0, 42.0, 48.0, 54.0,
                61.0, 69.0, 77.0, 86.0, 98.0, 110.0, 126.0, 147.0, 179.0,
                352.0),
    multi_label=0.0)
ACTIVITYNET_STATS = {"train": _ANET, "test": _ANET}


# ---------------------------------------------------------------------------
# Annotation statistics.
# ---------------------------------------------------------------------------
def _union_length(intervals: Sequence[tuple[float, float]]) -> float:
  """Total length covered by intervals (overlaps counted once)."""
  total, cur_s, cur_e = 0.0, None, None
  for s, e in sorted((s, e) for s, e in intervals if e > s):
    if cur_e is None or s > cur_e:
      total += 0.0 if cur_e is None else cur_e - cur_s
      cur_s, cur_e = s, e
    else:
      cur_e = max(cur_e, e)
  return total + (0.0 if cur_e is None else cur_e - cur_s)


def _round_sig(values: np.ndarray, digits: int = 4) -> tuple[float, ...]:
  return tuple(float(f"{v:.{digits}g}") for v in values)


def annotation_stats(gt_file: str | os.PathLike,
                     subsets: Optional[dict[str, str]] = None
                     ) -> dict[str, SubsetStats]:
  """Quantile tables of a gt.json, keyed "train"/"test".

  ``subsets`` maps each split to its gt subset (default ``GT_SUBSET``, the
  THUMOS14 names).  Needs ``duration`` in every entry; segments are clipped
  to [0, duration] (the real file has a few annotations past the end of
  their video).
  """
  gt = read_gt(gt_file)
  out = {}
  for split, subset in (subsets or GT_SUBSET).items():
    videos = [v for v in gt.values() if v.subset == subset]
    if not videos or any(v.duration is None for v in videos):
      raise ValueError(f"{gt_file}: need videos of subset '{subset}' with a "
                       "duration to derive statistics")
    durations = np.array([v.duration for v in videos])
    fg = np.array([
        _union_length([(max(0.0, s), min(v.duration, e))
                       for s, e, _ in v.annotations]) / v.duration
        for v in videos])
    lengths = np.array([e - s for v in videos for s, e, _ in v.annotations])
    multi = np.mean([len({a[2] for a in v.annotations}) > 1 for v in videos])
    out[split] = SubsetStats(
        duration_s=_round_sig(np.quantile(durations, QUANTILE_LEVELS)),
        fg_fraction=_round_sig(np.quantile(fg, QUANTILE_LEVELS)),
        instance_s=_round_sig(np.quantile(lengths, QUANTILE_LEVELS)),
        multi_label=_round_sig([multi])[0])
  return out


def _draw(rng: np.random.Generator, quantiles: Sequence[float]) -> float:
  """One draw by inverse CDF, piecewise linear between quantiles."""
  return float(np.interp(rng.random(), QUANTILE_LEVELS, quantiles))


# ---------------------------------------------------------------------------
# The shared world: one set of vectors per seed.
# ---------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class World:
  """Component directions (unit norm). Per stream s in STREAMS:
  scenes[s] (S, D); phases[s] list over classes of (P_c, D);
  phase_snr[s] list over classes of (P_c,); motion (D,) (flow only); and
  the signal settings the videos are planned and rendered with."""
  scenes: dict
  phases: dict
  phase_snr: dict
  motion: np.ndarray
  signal: SignalSettings


def _unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
  v = rng.standard_normal((n, dim))
  return v / np.linalg.norm(v, axis=1, keepdims=True)


def make_world(seed: int, num_classes: int, dim: int,
               signal: SignalSettings = SIGNAL_PRESETS["default"]) -> World:
  rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
  num_scenes = num_classes + NUM_NEUTRAL_SCENES
  scenes = {s: _unit_vectors(rng, num_scenes, dim) for s in STREAMS}
  counts = rng.choice(PHASES_PER_CLASS, size=num_classes)
  phases = {s: [_unit_vectors(rng, p, dim) for p in counts] for s in STREAMS}
  phase_snr = {s: [] for s in STREAMS}
  for p in counts:
    where = rng.choice(3, size=p, p=signal.phase_strong_in)   # 0 rgb, 1 flow, 2 both
    strong = {"rgb": where != 1, "flow": where != 0}
    for s in STREAMS:
      phase_snr[s].append(np.where(strong[s], signal.phase_snr_strong,
                                   signal.phase_snr_weak))
  motion = _unit_vectors(rng, 1, dim)[0]
  return World(scenes, phases, phase_snr, motion, signal)


# ---------------------------------------------------------------------------
# One video's annotations.
# ---------------------------------------------------------------------------
class Instance(NamedTuple):
  start_s: float
  end_s: float
  class_index: int
  ramp_snippets: int
  phase_bounds: np.ndarray     # (P_c + 1,) cumulative proportions, 0 .. 1


class VideoPlan(NamedTuple):
  num_snippets: int
  scene: int
  instances: tuple[Instance, ...]
  distractors: tuple[tuple[float, float], ...]


def _video_classes(rng: np.random.Generator, primary: int, num_classes: int,
                   p_multi: float) -> tuple[int, ...]:
  if num_classes > 1 and rng.random() < p_multi:
    other = int(rng.choice([c for c in range(num_classes) if c != primary]))
    return (primary, other)
  return (primary,)


def _instance_lengths(rng: np.random.Generator, stats: SubsetStats,
                      target_s: float) -> list[float]:
  """Real-scale instance lengths (s) whose sum is closest to target_s."""
  lengths: list[float] = []
  while not lengths or sum(lengths) < target_s:   # at least one instance
    lengths.append(min(_draw(rng, stats.instance_s), target_s))
  if len(lengths) > 1 and (sum(lengths) - target_s
                           > target_s - sum(lengths[:-1])):
    lengths.pop()
  return lengths


def _place(rng: np.random.Generator, lengths: Sequence[float],
           duration: float) -> np.ndarray:
  """Non-overlapping starts (s) for instances, random gaps. Returns (M,)."""
  gaps = rng.dirichlet(np.ones(len(lengths) + 1)) * (duration - sum(lengths))
  ends_before = np.concatenate([[0.0], np.cumsum(lengths)[:-1]])
  return np.cumsum(gaps[:-1]) + ends_before


def _rounded_segment(start: float, length: float,
                     duration: float) -> tuple[float, float]:
  """One decimal, as the real annotations; at least 0.1 s, inside the video."""
  s = min(round(start, 1), np.floor(10 * duration - 1) / 10)
  e = min(max(round(start + length, 1), s + 0.1), duration)
  return float(s), round(float(e), 2)


def _phase_bounds(rng: np.random.Generator, num_phases: int) -> np.ndarray:
  """Jittered phase proportions as cumulative bounds, (P + 1,) from 0 to 1."""
  return np.concatenate([[0.0], np.cumsum(rng.dirichlet(
      np.full(num_phases, 4.0)))])


def _plan_instances(rng: np.random.Generator, stats: SubsetStats,
                    real_duration: float, time_factor: float,
                    duration: float, classes: Sequence[int],
                    world: World) -> tuple[Instance, ...]:
  fg = min(_draw(rng, stats.fg_fraction), MAX_FG_FRACTION)
  lengths = [x * time_factor
             for x in _instance_lengths(rng, stats, fg * real_duration)]
  starts = _place(rng, lengths, duration)
  labels = rng.choice(classes, size=len(lengths))
  if len(classes) > 1 and len(lengths) > 1:
    labels[:2] = rng.permutation(classes)[:2]      # every label is annotated
  out = []
  for start, length, c in zip(starts, lengths, labels):
    s, e = _rounded_segment(float(start), length, duration)
    bounds = _phase_bounds(rng, len(world.phases["rgb"][int(c)]))
    out.append(Instance(s, e, int(c), int(rng.choice(RAMP_SNIPPETS)),
                         bounds))
  return tuple(out)


def _plan_distractors(rng: np.random.Generator, stats: SubsetStats,
                      rate: float, time_factor: float, duration: float,
                      instances: Sequence[Instance]
                      ) -> tuple[tuple[float, float], ...]:
  """Motion-only intervals centred in the background, ``rate`` per real
  background second."""
  fg = _union_length([(i.start_s, i.end_s) for i in instances])
  count = rng.poisson(rate * max(duration - fg, 0.0)
                      / max(time_factor, 1e-9))
  out = []
  for _ in range(count):
    centre = rng.uniform(0.0, duration)
    if any(i.start_s <= centre <= i.end_s for i in instances):
      continue
    half = 0.5 * _draw(rng, stats.instance_s) * time_factor
    out.append((max(0.0, centre - half), min(duration, centre + half)))
  return tuple(out)


def plan_video(rng: np.random.Generator, stats: SubsetStats, primary: int,
                num_classes: int, world: World, time_scale: float,
                max_snippets: int, instance_lengths: str = "scaled"
                ) -> VideoPlan:
  classes = _video_classes(rng, primary, num_classes, stats.multi_label)
  real_duration = _draw(rng, stats.duration_s)
  n = int(np.clip(round(real_duration * time_scale / SECONDS_PER_SNIPPET),
                  MIN_SNIPPETS, max_snippets))
  duration = n * SECONDS_PER_SNIPPET
  time_factor = duration / real_duration   # real seconds -> synthetic seconds
  check_instance_lengths(instance_lengths)
  if instance_lengths == "real":
    # Instances and distractors at real length (a factor of 1); the
    # foreground fraction is of the synthetic video.
    real_duration, time_factor = duration, 1.0
  instances = _plan_instances(rng, stats, real_duration, time_factor,
                              duration, classes, world)
  distractors = _plan_distractors(
      rng, stats, world.signal.distractors_per_bg_second, time_factor,
      duration, instances)
  num_scenes = num_classes + NUM_NEUTRAL_SCENES
  scene = (primary if rng.random() < world.signal.p_preferred_scene
           else int(rng.integers(num_scenes)))
  return VideoPlan(n, scene, instances, distractors)


# ---------------------------------------------------------------------------
# One video's features.
# ---------------------------------------------------------------------------
def _envelope(t: np.ndarray, start: float, end: float,
              ramp_snippets: int) -> np.ndarray:
  """Trapezoid weight (n,) in [0, 1]: 0.5 at the annotated bounds, ramping
  over ``ramp_snippets`` snippets centred on each bound."""
  half = 0.5 * ramp_snippets * SECONDS_PER_SNIPPET
  rise = (t - start) / (2 * half) + 0.5
  fall = (end - t) / (2 * half) + 0.5
  return np.clip(np.minimum(rise, fall), 0.0, 1.0)


def _phase_of(t: np.ndarray, inst: Instance) -> np.ndarray:
  """Phase index (n,) of each snippet time; snippets in the ramps outside
  the instance take the first/last phase."""
  u = np.clip((t - inst.start_s) / max(inst.end_s - inst.start_s, 1e-9),
              0.0, 1.0)
  num_phases = len(inst.phase_bounds) - 1
  return np.clip(np.searchsorted(inst.phase_bounds, u, side="right") - 1,
                 0, num_phases - 1)


def _noise(rng: np.random.Generator, n: int, dim: int,
           rho: float) -> np.ndarray:
  """Unit-variance noise (n, D), AR(1) over snippets with coefficient rho
  (independent draws as they are when rho is 0)."""
  x = rng.standard_normal((n, dim))
  if rho == 0.0:
    return x
  x[1:] *= np.sqrt(1.0 - rho ** 2)
  for i in range(1, n):
    x[i] += rho * x[i - 1]
  return x


def _clutter(rng: np.random.Generator, n: int, dim: int,
             std: float) -> np.ndarray:
  """Stationary AR(1) noise over snippets, std ``std``. Returns (n, D)."""
  eps = rng.standard_normal((n, dim)) * np.sqrt(1 - CLUTTER_RHO ** 2)
  out = np.empty((n, dim))
  out[0] = rng.standard_normal(dim)
  for i in range(1, n):
    out[i] = CLUTTER_RHO * out[i - 1] + eps[i]
  return std * out


def render(rng: np.random.Generator, plan: VideoPlan, world: World,
            dim: int) -> dict[str, np.ndarray]:
  """Features of one planned video: {stream: (n, D) float32}."""
  n = plan.num_snippets
  t = (np.arange(n) + 0.5) * SECONDS_PER_SNIPPET
  sig = world.signal
  out = {}
  for s in STREAMS:
    x = NOISE_STD * _noise(rng, n, dim, sig.noise_rho)
    x += _clutter(rng, n, dim, sig.clutter_std)
    x += sig.video_offset_snr * NOISE_STD * _unit_vectors(rng, 1, dim)
    x += getattr(sig, f"scene_snr_{s}") * NOISE_STD * world.scenes[s][plan.scene]
    for inst in plan.instances:
      env = _envelope(t, inst.start_s, inst.end_s, inst.ramp_snippets)
      phase = _phase_of(t, inst)
      vectors = world.phases[s][inst.class_index][phase]          # (n, D)
      snr = world.phase_snr[s][inst.class_index][phase]          # (n,)
      x += (env * snr)[:, None] * NOISE_STD * vectors
      if s == "flow":
        x += (env * sig.motion_snr * NOISE_STD)[:, None] * world.motion
    if s == "flow":
      for start, end in plan.distractors:
        env = _envelope(t, start, end, RAMP_SNIPPETS[1])
        x += (env * sig.motion_snr * NOISE_STD)[:, None] * world.motion
    out[s] = x.astype(np.float32)
  return out

