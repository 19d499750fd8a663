"""A driver that starts a process pool and ends without closing it, as an error on the way out would.

Usage: python open_pool.py JOB RECORD_DIR. Prints "started" once the worker has set the job up, then returns
from main with the worker still alive and waiting on its pipe.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime
from pathlib import Path

from batchcli.executors.processpool import ProcessBackend
from batchcli.load.configuration import bind_runtime
from batchcli.load.project import load_project
from batchcli.load.wiring import Wiring, build_job

if __name__ == "__main__":  # spawned workers import this file as __mp_main__
    target, records = sys.argv[1], Path(sys.argv[2])
    wiring = Wiring(target=target, config_name=None, values={"workers": ("1",), "record_dir": (str(records),)})
    job = build_job(load_project(target), wiring)
    bind_runtime(job.config, output_dir=records, run_dir=records, started_at=datetime.now().astimezone())
    asyncio.run(ProcessBackend(job, wiring).start())
    print("started", flush=True)
