#!/usr/bin/env python3
"""Runs N processes of one command on this machine as one JAX distributed job.

    python launch/local_multiprocess.py --num-processes=2 -- \\
        --config=configs/synthetic.py --workdir=/tmp/case_mp
    python launch/local_multiprocess.py --num-processes=2 --dry-run -- ...

A command that starts with a flag is run as ``python -m case_jax.main
<flags>``; otherwise it is run as given.  Process i gets

    CASE_COORDINATOR_ADDRESS=127.0.0.1:PORT CASE_NUM_PROCESSES=N CASE_PROCESS_ID=i

which ``case_jax.distributed.maybe_initialize()`` turns into
``jax.distributed.initialize(...)`` (CPU collectives over gloo), plus
``JAX_PLATFORMS=cpu`` and, with ``--devices-per-process=K``, K simulated CPU
devices per process.  Output lines are prefixed ``[i]``.  If one process
fails the others are terminated; SIGTERM/SIGINT are forwarded to all of them
(the training loop checkpoints and exits with status 75, see
case_jax/checkpoint.py).  The exit status is the first non-zero one, else 0.
"""
from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time


class CommandNotFound(Exception):
  """The command after '--' cannot be started (a user error)."""


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


USAGE = ("%(prog)s [-n N] [--devices-per-process=K] [--dry-run] [options] "
         "-- <case_jax.main flags> | -- COMMAND ...")
EPILOG = ("After '--': flags alone (--config=... --workdir=...) are run as "
          "python -m case_jax.main <flags> in every process; anything else is run "
          "as given.  A refused input exits with status 2.")


def build(args, command, python=sys.executable):
  """[(env additions, argv)] for every process; ``command`` is non-empty
  (``parse`` refuses an empty one)."""
  if command[0].startswith("-"):
    command = [python, "-m", "case_jax.main", *command]
  out = []
  for i in range(args.num_processes):
    env = {"CASE_COORDINATOR_ADDRESS": f"{args.host}:{args.port}",
           "CASE_NUM_PROCESSES": str(args.num_processes),
           "CASE_PROCESS_ID": str(i)}
    if args.platform:
      env["JAX_PLATFORMS"] = args.platform
    if args.devices_per_process:
      env["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count="
                          f"{args.devices_per_process}")
    out.append((env, list(command)))
  return out


def shell_line(env: dict, argv: list) -> str:
  return " ".join(["env"] + [f"{k}={shlex.quote(v)}" for k, v in env.items()]
                  + [shlex.quote(a) for a in argv])


def _pump(i, stream, sink):
  for line in iter(stream.readline, ""):
    sink.write(f"[{i}] {line}")
    sink.flush()


def run(procs_spec, timeout=None, sink=sys.stdout) -> int:
  procs, pumps = [], []
  for i, (env, argv) in enumerate(procs_spec):
    try:
      p = subprocess.Popen(argv, env={**os.environ, **env}, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, bufsize=1)
    except FileNotFoundError:   # the command after '--' is not a program
      for q in procs:
        q.kill()
        q.wait()
      raise CommandNotFound(f"{argv[0]!r}: no such program; after '--' give "
                            "case_jax.main flags or a command on PATH") from None
    t = threading.Thread(target=_pump, args=(i, p.stdout, sink), daemon=True)
    t.start()
    procs.append(p)
    pumps.append(t)

  def forward(signum, frame):
    for p in procs:
      if p.poll() is None:
        p.send_signal(signum)
  old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
  deadline = None if timeout is None else time.time() + timeout
  status = 0
  try:
    while any(p.poll() is None for p in procs):
      failed = [p for p in procs if p.poll() not in (None, 0)]
      if failed and not status:
        status = failed[0].returncode
        sink.write(f"[launcher] a process exited with {status}; stopping the "
                   "others\n")
        sink.flush()
        for p in procs:
          if p.poll() is None:
            p.terminate()
      if deadline is not None and time.time() > deadline:
        sink.write(f"[launcher] timeout after {timeout}s; killing all\n")
        sink.flush()
        status = status or 124
        for p in procs:
          if p.poll() is None:
            p.kill()
      time.sleep(0.05)
  finally:
    for s, h in old.items():
      signal.signal(s, h)
    for p in procs:  # never leave a child behind
      if p.poll() is None:
        p.kill()
      p.wait()
    for t in pumps:
      t.join(timeout=5)
  if not status:
    status = next((p.returncode for p in procs if p.returncode), 0)
  return status


def make_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="launch/local_multiprocess.py", usage=USAGE,
      description=__doc__.split("\n\n")[0], epilog=EPILOG)
  parser.add_argument("--num-processes", "-n", type=int, default=2,
                      help="how many processes (default 2)")
  parser.add_argument("--host", default="127.0.0.1",
                      help="coordinator host (loopback by default)")
  parser.add_argument("--port", type=int, default=0,
                      help="coordinator port (0: a free one)")
  parser.add_argument("--devices-per-process", type=int, default=0,
                      help="simulated CPU devices per process (0: leave XLA_FLAGS)")
  parser.add_argument("--platform", default="cpu",
                      help="JAX_PLATFORMS for the processes ('' to leave it)")
  parser.add_argument("--timeout", type=float, default=None,
                      help="kill everything after this many seconds")
  parser.add_argument("--dry-run", action="store_true",
                      help="print the commands, run nothing")
  parser.add_argument("--verbose", action="store_true",
                      help="print each process's command before starting it")
  return parser


def parse(argv):
  """(args, command); a bad input exits with status 2 and the usage."""
  parser = make_parser()
  if "--" in argv:
    k = argv.index("--")
    own, command = argv[:k], argv[k + 1:]
  else:
    own, command = argv, []
  args = parser.parse_args(own)
  if args.num_processes < 1:
    parser.error(f"--num-processes must be >= 1, got {args.num_processes}")
  if args.devices_per_process < 0:
    parser.error(f"--devices-per-process must be >= 0, got {args.devices_per_process}")
  if not command:
    parser.error("no command: give one after '--' (flags alone mean "
                 "python -m case_jax.main <flags>)")
  if not args.port:
    args.port = 12355 if args.dry_run else free_port()
  return args, command


def main(argv=None) -> int:
  args, command = parse(sys.argv[1:] if argv is None else argv)
  spec = build(args, command)
  if args.dry_run or args.verbose:
    for env, cmd in spec:
      print(("" if args.dry_run else "# ") + shell_line(env, cmd) + " &")
  if args.dry_run:
    print("wait")
    return 0
  try:
    return run(spec, timeout=args.timeout)
  except CommandNotFound as e:
    make_parser().error(str(e))


if __name__ == "__main__":
  sys.exit(main())
