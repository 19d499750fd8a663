"""Reports, from the first item, which stop signals each thread of the run blocks, and a program it starts.

The report (JSON, at ``report``) maps each thread's name to the stop signals it blocks, read from the kernel
(``/proc/self/task/TID/status``), and "child" to those a ``sleep`` started by ``process`` blocks.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from pathlib import Path

from batchcli import Param, Service, Source, inject

STOP = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM, "SIGHUP": signal.SIGHUP}


def blocked(status: Path) -> list[str]:
    for line in status.read_text().splitlines():
        if line.startswith("SigBlk:"):
            mask = int(line.split()[1], 16)
            return sorted(name for name, number in STOP.items() if mask & (1 << (number - 1)))
    raise AssertionError(f"no SigBlk in {status}")


@inject
class Numbers(Source[int]):
    def __iter__(self):
        return iter(range(3))

    def __len__(self) -> int:
        return 3


@inject
class Report(Service[int]):
    def __init__(self, report: Param[Path]) -> None:
        self.report = report

    def process(self, item: int) -> None:
        if item:
            return
        threads = {thread.name: blocked(Path(f"/proc/self/task/{thread.native_id}/status")) for thread in threading.enumerate()}
        child = subprocess.Popen(["sleep", "60"])
        try:
            threads["child"] = blocked(Path(f"/proc/{child.pid}/status"))
        finally:
            child.terminate()  # answered only when the child does not block SIGTERM
            threads["child terminated by"] = [signal.Signals(-child.wait(timeout=10)).name]
        self.report.write_text(json.dumps({"me": threading.current_thread().name, "threads": threads}))
