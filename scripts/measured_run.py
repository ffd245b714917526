"""Run a command as the scale checks do: its output to a log file, its wall time and its peak
resident memory (`wait4`: the child's own, or its largest descendant's)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(command: list[str], log: Path) -> dict:
    """Run `command` from the repository root, stdout and stderr into `log`; exit naming the
    log if it fails. Returns its seconds and peak_rss_bytes."""
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed ({log}): {' '.join(command)}\n{log.read_text()[-3000:]}")
    return {"seconds": seconds, "peak_rss_bytes": usage.ru_maxrss * 1024}
