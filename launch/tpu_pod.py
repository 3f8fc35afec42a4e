#!/usr/bin/env python3
"""Trains on a Cloud TPU VM slice (TPU pod): create or reuse, install, run.

    python launch/tpu_pod.py --name=case-v4 --zone=us-central2-b \\
        --accelerator=v4-32 --bucket=my-bucket --run=thumos14/seed0 -- \\
        --config=configs/thumos14.py --config.data.root=/gcs/my-bucket/data/thumos14
    python launch/tpu_pod.py ... --dry-run     # print the commands, run nothing

Steps (each one ``gcloud`` command, printed by --dry-run):
  1. describe the TPU VM; create it when it does not exist (``--spot`` for
     preemptible capacity);
  2. ``git archive`` this checkout, copy it to every worker and
     ``pip install`` it with ``jax[tpu]`` there;
  3. mount the bucket on every worker with gcsfuse at /gcs/<bucket>;
  4. run the same ``python -m case_jax.main <flags>
     --workdir=/gcs/<bucket>/<run>`` on all workers at once, with
     ``CASE_DISTRIBUTED=auto`` (``jax.distributed.initialize()`` finds the
     pod's hosts itself).  Orbax writes the checkpoints to the bucket through
     the mount, marking each finished one with a commit file (gcsfuse has no
     atomic directory rename; ``checkpoint_commit='auto'`` detects the mount);
     every worker reads its own shard of each global batch.

Preemption: the workers get SIGTERM, checkpoint at the step boundary and exit
with status 75; rerunning this same command reuses (or recreates) the slice
and resumes from the bucket.  Flags after ``--`` go to case_jax.main.
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys

REMOTE_DIR = "case_jax_src"


def q(x) -> str:
  return shlex.quote(str(x))


def commands(a, main_flags) -> list[dict]:
  """[{'argv': [...], 'check': bool, 'what': str}] in order."""
  loc = ["--zone", a.zone] + (["--project", a.project] if a.project else [])
  tpu = ["gcloud", "compute", "tpus", "tpu-vm"]
  workdir = f"/gcs/{a.bucket}/{a.run}"
  tarball = f"/tmp/{a.name}-case_jax.tar.gz"
  create = tpu + ["create", a.name, *loc, "--accelerator-type", a.accelerator,
                  "--version", a.runtime_version]
  if a.spot:
    create.append("--spot")
  install = (f"set -e; rm -rf {REMOTE_DIR}; mkdir -p {REMOTE_DIR}; "
             f"tar xzf ~/{q(tarball.split('/')[-1])} -C {REMOTE_DIR}; "
             f"python3 -m pip install -q -U {q('jax[tpu]' + a.jax_version)} "
             f"-e ./{REMOTE_DIR}")
  mount = (f"set -e; mkdir -p /gcs/{a.bucket} 2>/dev/null || "
           f"(sudo mkdir -p /gcs/{a.bucket} && sudo chown $USER /gcs/{a.bucket}); "
           f"mountpoint -q /gcs/{a.bucket} || gcsfuse --implicit-dirs "
           f"{q(a.bucket)} /gcs/{a.bucket}")
  train = (f"cd {REMOTE_DIR} && CASE_DISTRIBUTED=auto python3 -m case_jax.main "
           + " ".join(q(f) for f in main_flags) + f" --workdir={q(workdir)}")
  ssh = lambda cmd: tpu + ["ssh", a.name, *loc, "--worker=all", "--command", cmd]
  return [
      dict(what="reuse the slice if it exists", check=False,
           argv=tpu + ["describe", a.name, *loc, "--format=value(state)"]),
      dict(what="otherwise create it", check=True, argv=create, only_if_missing=True),
      dict(what="package this checkout", check=True,
           argv=["git", "archive", "--format=tar.gz", "-o", tarball, "HEAD"]),
      dict(what="copy it to every worker", check=True,
           argv=tpu + ["scp", tarball, f"{a.name}:~/", *loc, "--worker=all"]),
      dict(what="install on every worker", check=True, argv=ssh(install)),
      dict(what="mount the bucket on every worker", check=True, argv=ssh(mount)),
      dict(what="train on all workers", check=False, argv=ssh(train)),
  ]


def make_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog="launch/tpu_pod.py",
      usage="%(prog)s --name=VM --zone=ZONE --bucket=BUCKET --run=PATH [options] "
            "-- <case_jax.main flags>",
      description=__doc__.split("\n\n")[0],
      epilog="Flags after '--' go to python -m case_jax.main on every worker "
             "(not --workdir: it is /gcs/<bucket>/<run>).  A refused input "
             "exits with status 2.")
  p.add_argument("--name", required=True, help="TPU VM name")
  p.add_argument("--zone", required=True, help="GCP zone, e.g. us-central2-b")
  p.add_argument("--project", default=None, help="GCP project (default: gcloud's)")
  p.add_argument("--accelerator", default="v4-8", help="e.g. v4-32, v5litepod-16")
  p.add_argument("--runtime-version", default="tpu-ubuntu2204-base",
                 help="TPU VM software version for a new slice")
  p.add_argument("--spot", action="store_true", help="preemptible (spot) capacity")
  p.add_argument("--jax-version", default="", help="e.g. ==0.10.2 (default: latest)")
  p.add_argument("--bucket", required=True, help="GCS bucket (no gs://)")
  p.add_argument("--run", required=True, help="workdir inside the bucket")
  p.add_argument("--dry-run", action="store_true",
                 help="print the gcloud commands, run nothing")
  p.add_argument("--verbose", action="store_true",
                 help="print each command in full before running it")
  return p


def parse(argv):
  """(args, case_jax.main flags); a bad input exits with status 2."""
  p = make_parser()
  own, flags = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) \
      if "--" in argv else (argv, [])
  a = p.parse_args(own)
  a.bucket = a.bucket.removeprefix("gs://").strip("/")
  if not a.bucket:
    p.error("--bucket is empty: give the GCS bucket name, e.g. --bucket=my-bucket")
  if any(f.startswith("--workdir") for f in flags):
    p.error("the workdir is /gcs/<bucket>/<run>: use --bucket/--run, not --workdir")
  return a, flags


def main(argv=None) -> int:
  a, flags = parse(sys.argv[1:] if argv is None else argv)
  steps = commands(a, flags)
  if a.dry_run:
    for s in steps:
      prefix = "# if the describe above fails:\n" if s.get("only_if_missing") else ""
      print(f"{prefix}# {s['what']}\n" + " ".join(q(x) for x in s["argv"]))
    return 0
  try:
    exists = subprocess.run(steps[0]["argv"], capture_output=True, text=True)
  except FileNotFoundError:
    make_parser().error("gcloud not found: install the Google Cloud SDK and log "
                        "in, or use --dry-run to print the commands")
  state = exists.stdout.strip()
  if exists.returncode == 0:
    print(f"Reusing TPU VM {a.name} (state {state or '?'})")
  for s in steps[1:]:
    if s.get("only_if_missing") and exists.returncode == 0:
      continue
    print(f"# {s['what']}", flush=True)
    if a.verbose:
      print(" ".join(q(x) for x in s["argv"]), flush=True)
    rc = subprocess.run(s["argv"]).returncode
    if rc and (s["check"] or s is steps[-1]):
      return rc
  return 0


if __name__ == "__main__":
  sys.exit(main())
