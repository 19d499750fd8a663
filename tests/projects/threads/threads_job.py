"""A sync ``def process`` spy that records how many calls overlap and on which threads."""

import json
import threading
import time

from batchcli import Configuration, Param, Service, Source, inject


@inject
class Numbers(Source[int]):
    def __init__(self, count: Param[int] = 24) -> None:
        self.count = count

    def __iter__(self):
        yield from range(self.count)


@inject
class Blocking(Service[int]):
    def __init__(self, config: Configuration) -> None:
        self.config = config
        self.lock = threading.Lock()
        self.current = 0
        self.max_current = 0
        self.threads: set[str] = set()

    def process(self, item: int) -> None:
        with self.lock:
            self.current += 1
            self.max_current = max(self.max_current, self.current)
            self.threads.add(threading.current_thread().name)
        time.sleep(0.05)  # blocking work, as a sync client library would do
        with self.lock:
            self.current -= 1

    def finish(self) -> None:
        result = {"max_concurrent": self.max_current, "threads": sorted(self.threads)}
        (self.config.run_dir / "threads.json").write_text(json.dumps(result))
