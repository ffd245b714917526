"""Both sbatch scripts on a CPU, under stand-ins for srun and scontrol: the SIGUSR1 that SLURM's
`--signal=USR1@300` sends to every process of the job step saves the current step, requeues the
job exactly once, and no rank exits before the requeue: with `srun --kill-on-bad-exit=1` (and
torchrun, which stops its workers when one fails) the first rank to exit ends the others, so a
rank exiting early would cut rank 0 off between its save and its `scontrol requeue`."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_resume import _lines, losses

pytestmark = [pytest.mark.slow, pytest.mark.distributed, pytest.mark.timeout(300)]

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"

# srun and scontrol for one job on this machine, one program behind both names. Like slurmstepd
# with ProctrackType=proctrack/cgroup, the fake srun signals every process of its step (each task
# and all its descendants): on SIGUSR1 (the test plays slurmctld's --signal), and with SIGKILL
# when a task exits non-zero under --kill-on-bad-exit=1; it records each task's exit. The fake
# scontrol answers a requeue after 3 s (slurmctld can take seconds; a rank that does not wait
# is gone within about one) and records how many of the ranks that were running when rank 0
# called it still are: a rank that exits before the requeue is done shows there.
FAKE_SLURM = r'''
import itertools, os, signal, subprocess, sys, time
from pathlib import Path

EVENTS = Path(os.environ["FAKE_SLURM_EVENTS"])


def record(line):
    with EVENTS.open("a") as events:
        events.write(line + "\n")


def parents():
    """pid -> parent pid of every running (not zombie) process."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, parent = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, IndexError):
            continue  # gone meanwhile
        if state != "Z":
            found[int(stat.parent.name)] = int(parent)
    return found


def children_of(pid, tree):
    return [child for child, parent in tree.items() if parent == pid]


def signal_step(tasks, signum):
    tree = parents()
    step, frontier = [], [task.pid for task in tasks]
    while frontier:
        step += frontier
        frontier = [child for pid in frontier for child in children_of(pid, tree)]
    for pid in step:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def srun(args):
    options = list(itertools.takewhile(lambda arg: arg.startswith("-"), args))
    command = args[len(options):]
    tasks = [
        subprocess.Popen(command, env={**os.environ, "SLURM_PROCID": str(task),
                                       "SLURM_LOCALID": str(task), "SLURM_NODEID": "0"})
        for task in range(int(os.environ["SLURM_NTASKS"]))
    ]
    signal.signal(signal.SIGUSR1, lambda *_: signal_step(tasks, signal.SIGUSR1))
    signal.signal(signal.SIGTERM, lambda *_: signal_step(tasks, signal.SIGKILL))
    record(f"srun {os.getpid()}")
    running = set(tasks)
    while running:
        for task in [task for task in running if task.poll() is not None]:
            running.discard(task)
            record(f"task {tasks.index(task)} exited {task.returncode}")
            if task.returncode != 0 and "--kill-on-bad-exit=1" in options:
                signal_step(running, signal.SIGKILL)
        time.sleep(0.02)
    sys.exit(max(abs(task.returncode) for task in tasks))


def scontrol(args):
    if args[:2] == ["show", "hostnames"]:
        print("127.0.0.1")
    elif args[0] == "requeue":
        tree = parents()
        ranks = set(children_of(tree[os.getppid()], tree))  # rank 0 and its siblings
        time.sleep(3.0)
        record(f"requeue {args[1]}: {len(ranks & set(parents()))} of {len(ranks)} ranks running")


{"srun": srun, "scontrol": scontrol}[sys.argv[1]](sys.argv[2:])
'''


def _install_fake_slurm(bin_dir: Path) -> None:
    bin_dir.mkdir()
    program = bin_dir / "fake_slurm.py"
    program.write_text(FAKE_SLURM)
    for name in ("srun", "scontrol"):
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{program}" {name} "$@"\n')
        shim.chmod(0o755)


def _job_id_with_a_free_port() -> int:
    """A job id whose port (20000 + id % 20000, as both scripts derive it) is free now."""
    for port in random.sample(range(20000, 40000), 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port  # 20000 + port % 20000 == port
    raise AssertionError("no free port in 20000-39999")


def _job_environment(tmp_path: Path, job_id: int, launch: dict[str, str]) -> dict[str, str]:
    """The environment of the batch script: this machine's, less any launcher's variables, plus
    the job's as SLURM sets them, with the fakes first on PATH."""
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("SLURM_", "TORCHELASTIC_", "PET_"))
        and name not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    return {
        **inherited,
        "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "FAKE_SLURM_EVENTS": str(tmp_path / "events"),
        "SLURM_JOB_ID": str(job_id),
        "SLURM_JOB_NODELIST": "node001",
        "SLURM_CPUS_PER_TASK": "1",
        "PYTHONUNBUFFERED": "1",
        **launch,
    }


def _events(tmp_path: Path) -> list[str]:
    return _lines(tmp_path / "events")


@pytest.mark.parametrize(
    ("script", "launch"),
    [
        ("slurm_train.sbatch", {"SLURM_NTASKS": "2"}),
        (
            "slurm_train_torchrun.sbatch",
            {"SLURM_NTASKS": "1", "SLURM_NNODES": "1", "SLURM_GPUS_ON_NODE": "2"},
        ),
    ],
    ids=["srun", "srun-torchrun"],
)
def test_sigusr1_saves_requeues_once_and_no_rank_exits_before_the_requeue(
    tmp_path, tiny_overrides, script, launch
):
    _install_fake_slurm(tmp_path / "bin")
    # The scripts run .venv/bin/python from the submit directory: this test's environment.
    (tmp_path / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    job_id = _job_id_with_a_free_port()
    run_dir = tmp_path / "outputs" / "train" / f"slurm-{job_id}"
    overrides = [*tiny_overrides, "trainer.checkpoint_every=0", "testing.sleep_per_step=0.2"]
    with (tmp_path / "job.out").open("w") as output:
        batch = subprocess.Popen(
            ["bash", str(SCRIPTS / script), *overrides],
            cwd=tmp_path,
            env=_job_environment(tmp_path, job_id, launch),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    srun_pid = None
    try:
        deadline = time.monotonic() + 120
        while len(_lines(run_dir / "metrics.jsonl")) < 3:
            running = batch.poll() is None and time.monotonic() < deadline
            assert running, (tmp_path / "job.out").read_text()[-3000:]
            time.sleep(0.1)
        (srun_pid,) = [int(e.split()[1]) for e in _events(tmp_path) if e.startswith("srun ")]
        os.kill(srun_pid, signal.SIGUSR1)  # to every process of the step, torchrun included
        batch.wait(timeout=120)
    finally:
        if batch.poll() is None:
            if srun_pid is not None:
                os.kill(srun_pid, signal.SIGTERM)  # the fake srun kills its whole step
            batch.kill()
            batch.wait()
    outcome = "\n".join([(tmp_path / "job.out").read_text()[-3000:], *_events(tmp_path)])

    stopped_at = max(losses(run_dir))
    saved = sorted(path.name for path in (run_dir / "checkpoints").glob("step-*.pt"))
    assert saved[-1:] == [f"step-{stopped_at:09d}.pt"], outcome
    requeues = [e for e in _events(tmp_path) if e.startswith("requeue")]
    assert requeues == [f"requeue {job_id}: 2 of 2 ranks running"], outcome


def test_the_torchrun_script_without_a_gpu_count_stops_in_one_line(tmp_path):
    """A site that requests GPUs with --gres gets no SLURM_GPUS_ON_NODE: the script counts the
    node's GPUs with nvidia-smi, and with none found says so rather than divide by zero."""
    _install_fake_slurm(tmp_path / "bin")
    nvidia_smi = tmp_path / "bin" / "nvidia-smi"
    nvidia_smi.write_text("#!/bin/sh\nexit 9\n")  # no driver: lists nothing
    nvidia_smi.chmod(0o755)
    launch = {"SLURM_NTASKS": "1", "SLURM_NNODES": "1"}
    result = subprocess.run(
        ["bash", str(SCRIPTS / "slurm_train_torchrun.sbatch"), "experiment=tiny"],
        cwd=tmp_path,
        env=_job_environment(tmp_path, _job_id_with_a_free_port(), launch),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "SLURM_GPUS_ON_NODE unset, nvidia-smi lists none" in result.stderr, result.stderr
