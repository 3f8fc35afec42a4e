"""launch/: every launcher's --dry-run prints the exact commands (issue 6 §3),
and case_jax.distributed reads the environment they set."""
import os
import shlex
import subprocess
import sys
import time

import pytest

from case_jax import distributed as dist

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable


def dry(script, *args):
  out = subprocess.run([PY, os.path.join(REPO, "launch", script), *args, "--dry-run"]
                       if "--" not in args else
                       [PY, os.path.join(REPO, "launch", script),
                        *args[:args.index("--")], "--dry-run", *args[args.index("--"):]],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
  assert out.returncode == 0, out.stderr
  return out.stdout


def test_local_multiprocess_dry_run_prints_one_command_per_process():
  out = dry("local_multiprocess.py", "--num-processes=3", "--port=23456", "--",
            "--config=configs/synthetic.py", "--workdir=/tmp/mp run")
  lines = out.strip().splitlines()
  assert lines[-1] == "wait" and len(lines) == 4
  for i, line in enumerate(lines[:3]):
    argv = shlex.split(line)
    assert argv[0] == "env" and argv[-1] == "&"
    assert "CASE_COORDINATOR_ADDRESS=127.0.0.1:23456" in argv
    assert "CASE_NUM_PROCESSES=3" in argv and f"CASE_PROCESS_ID={i}" in argv
    assert "JAX_PLATFORMS=cpu" in argv
    k = argv.index("-m")
    assert argv[k - 1] == PY and argv[k + 1] == "case_jax.main"
    assert argv[k + 2:-1] == ["--config=configs/synthetic.py", "--workdir=/tmp/mp run"]


def test_local_multiprocess_runs_a_given_command_and_devices_flag():
  out = dry("local_multiprocess.py", "-n", "2", "--port=1", "--devices-per-process=4",
            "--", "python", "worker.py", "x")
  first = shlex.split(out.splitlines()[0])
  assert "XLA_FLAGS=--xla_force_host_platform_device_count=4" in first
  assert first[-4:] == ["python", "worker.py", "x", "&"]


def test_local_multiprocess_reports_a_failing_process(tmp_path):
  t0 = time.time()
  out = subprocess.run(
      [PY, os.path.join(REPO, "launch", "local_multiprocess.py"), "-n", "2",
       "--timeout=80", "--", PY, "-c",
       "import os,sys,time; i=int(os.environ['CASE_PROCESS_ID']); "
       "print('hello', i, flush=True); time.sleep(0 if i else 60); sys.exit(3 if i else 0)"],
      capture_output=True, text=True, timeout=90)
  assert out.returncode == 3  # process 1 failed; process 0 was stopped, not waited for
  assert "[0] hello 0" in out.stdout and "[1] hello 1" in out.stdout
  assert "stopping the others" in out.stdout
  assert time.time() - t0 < 30


def test_tpu_pod_dry_run():
  out = dry("tpu_pod.py", "--name=case-v4", "--zone=us-central2-b",
            "--accelerator=v4-32", "--bucket=gs://my-bucket", "--run=thumos/s0",
            "--spot", "--project=proj", "--", "--config=configs/thumos14.py",
            "--config.num_steps=100")
  lines = [l for l in out.splitlines() if l and not l.startswith("#")]
  assert lines[0].startswith("gcloud compute tpus tpu-vm describe case-v4 "
                             "--zone us-central2-b --project proj")
  assert lines[1].startswith("gcloud compute tpus tpu-vm create case-v4")
  assert "--accelerator-type v4-32" in lines[1] and lines[1].endswith("--spot")
  assert "# if the describe above fails:" in out
  assert lines[2].startswith("git archive --format=tar.gz -o /tmp/case-v4-case_jax.tar.gz")
  assert shlex.split(lines[3])[4:7] == ["scp", "/tmp/case-v4-case_jax.tar.gz", "case-v4:~/"]
  assert all("--worker=all" in l for l in lines[3:])
  assert "pip install" in lines[4] and "jax[tpu]" in lines[4]
  assert "gcsfuse --implicit-dirs my-bucket /gcs/my-bucket" in lines[5]
  run = shlex.split(lines[6])
  remote = run[run.index("--command") + 1]
  assert remote == ("cd case_jax_src && CASE_DISTRIBUTED=auto python3 -m case_jax.main "
                    "--config=configs/thumos14.py --config.num_steps=100 "
                    "--workdir=/gcs/my-bucket/thumos/s0")


def test_tpu_pod_rejects_a_workdir_flag():
  out = subprocess.run([PY, os.path.join(REPO, "launch", "tpu_pod.py"), "--name=a",
                        "--zone=z", "--bucket=b", "--run=r", "--dry-run", "--",
                        "--workdir=/x"], capture_output=True, text=True, timeout=60)
  assert out.returncode != 0 and "--bucket/--run" in out.stderr


def test_slurm_dry_run_prints_the_script_and_submit_line(tmp_path):
  wd = str(tmp_path / "run")
  out = dry("slurm_gpu.py", "--nodes=2", "--gpus-per-node=8", "--partition=gpu",
            "--time=12:00:00", f"--workdir={wd}", "--setup=source .venv/bin/activate",
            "--", "--config=configs/thumos14.py")
  for line in ["#!/bin/bash", "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1",
               "#SBATCH --gpus-per-node=8", "#SBATCH --partition=gpu",
               "#SBATCH --time=12:00:00", "#SBATCH --signal=TERM@120",
               "#SBATCH --requeue", f"#SBATCH --output={wd}/slurm-%j.out",
               "source .venv/bin/activate", "export CASE_DISTRIBUTED=auto",
               f"srun --kill-on-bad-exit=1 python -m case_jax.main "
               f"--config=configs/thumos14.py --workdir={wd}",
               "if [ $rc -eq 75 ]; then", '  scontrol requeue "$SLURM_JOB_ID"']:
    assert line in out.splitlines(), line
  assert out.rstrip().endswith(f"sbatch {wd}/job.sbatch")
  assert not os.path.exists(wd)  # dry run writes nothing


def test_slurm_script_is_valid_bash(tmp_path):
  out = dry("slurm_gpu.py", f"--workdir={tmp_path}", "--", "--config=configs/x.py")
  body = out.split("\n", 1)[1].rsplit("# submit:", 1)[0]
  path = tmp_path / "s.sh"
  path.write_text(body)
  assert subprocess.run(["bash", "-n", str(path)]).returncode == 0


def test_launch_exit_code_matches_checkpoint():
  from case_jax import checkpoint
  sys.path.insert(0, os.path.join(REPO, "launch"))
  import slurm_gpu
  assert slurm_gpu.PREEMPTED_EXIT_CODE == checkpoint.PREEMPTED_EXIT_CODE


# =============================================================================
# case_jax.distributed reads what the launchers set.
# =============================================================================
def test_distributed_settings_from_environment():
  assert dist.settings({}) is None
  assert dist.settings({"CASE_DISTRIBUTED": "auto"}) == {}
  assert dist.settings({"CASE_COORDINATOR_ADDRESS": "127.0.0.1:5", "CASE_NUM_PROCESSES": "2",
                        "CASE_PROCESS_ID": "1", "CASE_LOCAL_DEVICE_IDS": "0,1"}) == dict(
      coordinator_address="127.0.0.1:5", num_processes=2, process_id=1,
      local_device_ids=[0, 1])
  with pytest.raises(ValueError, match="CASE_PROCESS_ID"):
    dist.settings({"CASE_COORDINATOR_ADDRESS": "h:1", "CASE_NUM_PROCESSES": "2"})
  with pytest.raises(ValueError, match="not in"):
    dist.settings({"CASE_COORDINATOR_ADDRESS": "h:1", "CASE_NUM_PROCESSES": "2",
                   "CASE_PROCESS_ID": "2"})
  assert dist.maybe_initialize({}) is False


def test_process_rows_partition_the_global_batch():
  from case_jax import placement
  rows = [placement.process_rows(16, p, 4) for p in range(4)]
  assert rows == [slice(0, 4), slice(4, 8), slice(8, 12), slice(12, 16)]
  with pytest.raises(ValueError, match="divisible"):
    placement.process_rows(10, 0, 4)
