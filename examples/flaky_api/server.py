"""A small HTTP API that misbehaves on purpose: throttling, outages and dead credentials.

Tests, benchmarks and the ``flaky_api`` example run against it on 127.0.0.1 (standard library only: asyncio streams)::

    python examples/flaky_api/server.py --port 8765 --rate 200

``GET /items/N`` with ``Authorization: Bearer TOKEN`` answers ``{"item": N}``, or:

- **429** with ``Retry-After`` when requests come faster than ``rate`` per second (a token bucket);
- **503** with ``Retry-After`` while the API is down (``down(seconds)``), or refuses connections outright
  (``down(seconds, refuse=True)``: the listening socket is closed, then opened again on the same port);
- **401** when the token is not ``token``.

Every answer is counted by status, and every item answered 200 is kept, so a test can tell "processed exactly
once" from "lost" and "twice".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Iterable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any


class FlakyApi:
    """The server and its switches; ``start()`` it, read ``url``, ``stop()`` it (or use it as a context manager)."""

    def __init__(
        self,
        rate: float | None = None,
        burst: float | None = None,
        token: str = "good",
        retry_after_s: float = 1.0,
        http_date: bool = False,
        port: int = 0,
        throttle_first: int = 0,
        refuse: Iterable[int] = (),
        reject: Iterable[int] = (),
        down_retry_after: bool = True,
    ) -> None:
        self.rate = rate
        """Requests per second served before 429s start; None for no limit."""
        self.burst = burst if burst is not None else max(1.0, (rate or 0) / 10)
        self.token = token
        self.retry_after_s = retry_after_s
        """What ``Retry-After`` says on a 429 (a 503 says how long the outage has left)."""
        self.http_date = http_date
        """Send ``Retry-After`` as an HTTP-date instead of seconds."""
        self.throttle_first = throttle_first
        """Answer the first N requests 429 whatever the rate (a test's deterministic throttle)."""
        self.refuse = frozenset(refuse)
        """Items always answered 503 with ``Retry-After`` (a record the API cannot serve), whatever the rate."""
        self.down_retry_after = down_retry_after
        """Whether the 503s of ``down()`` say when the API is back (``Retry-After``); a bare 503 is an outage."""
        self.reject = frozenset(reject)
        """Items always answered 422 (a bad record: the API is fine, the request is not)."""
        self.requests: list[tuple[float, str, int, str | None]] = []
        """Every request as (``time.time()`` it arrived, path, status, Retry-After sent or None)."""
        self.statuses: Counter[int] = Counter()
        self.served: Counter[int] = Counter()
        """Item number -> how many times it was answered 200."""
        self._lock = threading.Lock()
        self._tokens = self.burst
        self._refilled = time.monotonic()
        self._down_until = 0.0
        self._refusing_until = 0.0
        self._refuse_for = 0.0
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> FlakyApi:
        """Serve on a thread of its own (an asyncio loop: http.server's thread per connection is too slow)."""
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def serve() -> None:
            self._server = await asyncio.start_server(self._connection, "127.0.0.1", self._port, backlog=1024)
            self._port = self._server.sockets[0].getsockname()[1]
            ready.set()

        self._thread = threading.Thread(target=self._loop.run_forever, name="flaky-api", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(serve(), self._loop).result()
        ready.wait()
        return self

    def stop(self) -> None:
        """Close the listener and every connection, and end the server's thread."""
        loop, server = self._loop, self._server
        if loop is None or server is None:
            return

        async def close() -> None:
            server.close()
            writers = list(self._writers)
            for writer in writers:
                writer.close()
            # Each answer counted reaches its client before the loop stops: stopped with a response still buffered,
            # the server counted an item served whose client saw the connection drop (and rightly sent it again).
            if writers:
                done = asyncio.gather(*(writer.wait_closed() for writer in writers), return_exceptions=True)
                try:
                    await asyncio.wait_for(done, 2.0)
                except TimeoutError:
                    pass

        asyncio.run_coroutine_threadsafe(close(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join()
        loop.close()
        self._loop = self._server = None

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One keep-alive connection: ``GET`` requests in turn until the client closes it."""
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if writer.is_closing():  # read from the buffer after stop() closed the connection: never answered,
                    break  # so never counted (the client sees the connection drop and sends the item again)
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1] if len(lines[0].split(" ")) > 1 else "/"
                fields = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
                auth = next((v for k, v in fields.items() if k.lower() == "authorization"), "")
                status, headers, body = self._answer(path, auth)
                payload = json.dumps(body).encode()
                extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
                writer.write(
                    f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(payload)}\r\n{extra}\r\n".encode() + payload
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def __enter__(self) -> FlakyApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def down(self, seconds: float, refuse: bool = False) -> None:
        """Take the API down for ``seconds``: 503s, or refused connections when ``refuse``."""
        if refuse:  # refused only: a 503 answered while the listener closes would read as a throttle and cool down
            self.stop()
            threading.Timer(seconds, self.start).start()
            return
        with self._lock:
            self._down_until = time.monotonic() + seconds

    def refuse_all(self, seconds: float) -> None:
        """Answer every request 429 (with ``retry_after_s``) for ``seconds`` from the next one: a quota that ran out
        (from the next request, not from now, so that a run's start-up does not use up the window)."""
        with self._lock:
            self._refuse_for, self._refusing_until = seconds, 0.0

    def _answer(self, path: str, authorization: str) -> tuple[int, dict[str, str], dict[str, Any]]:
        now = time.monotonic()
        if path == "/stats":  # for a server in another process (the benchmarks); not counted itself
            with self._lock:
                body = {
                    "statuses": dict(self.statuses),
                    "served": len(self.served),
                    "twice": sum(n > 1 for n in self.served.values()),
                    "requests": [[t, status] for t, _, status, _ in self.requests],
                }
            return 200, {}, body
        with self._lock:
            status, headers, body = self._decide(path, authorization, now)
            self.requests.append((time.time(), path, status, headers.get("Retry-After")))
            self.statuses[status] += 1
            if status == 200:
                self.served[body["item"]] += 1
        return status, headers, body

    def _decide(self, path: str, authorization: str, now: float) -> tuple[int, dict[str, str], dict[str, Any]]:
        if now < self._down_until:
            headers = {"Retry-After": self._retry_after(self._down_until - now)} if self.down_retry_after else {}
            return 503, headers, {"error": "down"}
        if authorization != f"Bearer {self.token}":
            return 401, {}, {"error": "bad token"}
        if self._refuse_for:
            self._refuse_for, self._refusing_until = 0.0, now + self._refuse_for
        if len(self.requests) < self.throttle_first or now < self._refusing_until:
            return 429, {"Retry-After": self._retry_after(self.retry_after_s)}, {"error": "slow down"}
        if self.rate is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._refilled) * self.rate)
            self._refilled = now
            if self._tokens < 1:
                return 429, {"Retry-After": self._retry_after(self.retry_after_s)}, {"error": "slow down"}
            self._tokens -= 1
        try:
            item = int(path.rstrip("/").rsplit("/", 1)[-1])
        except ValueError:
            return 404, {}, {"error": f"no such path {path!r}"}
        if item in self.reject:
            return 422, {}, {"error": f"item {item} is not valid"}
        if item in self.refuse:
            return 503, {"Retry-After": self._retry_after(self.retry_after_s)}, {"error": f"cannot serve item {item}"}
        return 200, {}, {"item": item}

    def _retry_after(self, seconds: float) -> str:
        if self.http_date:
            return formatdate(time.time() + seconds, usegmt=True)
        return str(max(1, round(seconds))) if seconds > 0 else "0"  # 0 only when asked for: "retry now"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--rate", type=float, default=200, help="requests per second before 429s (0: no limit)")
    parser.add_argument("--token", default="good")
    parser.add_argument("--burst", type=float, default=None, help="token bucket size (default rate/10)")
    parser.add_argument("--retry-after", type=float, default=1.0, help="seconds a 429 asks to wait")
    parser.add_argument("--down-every", type=float, default=0, help="go down for 5 s every N seconds (0: never)")
    parser.add_argument("--down-after", type=float, default=0, help="one outage, N seconds after the start (0: none)")
    parser.add_argument("--down-for", type=float, default=10, help="how long that outage lasts")
    parser.add_argument("--refuse", action="store_true", help="the outage refuses connections instead of answering 503")
    parser.add_argument("--quota-after", type=float, default=0, help="a quota runs out N seconds after the start (0: never)")
    parser.add_argument("--quota-for", type=float, default=10, help="how long every request is then answered 429")
    args = parser.parse_args()
    api = FlakyApi(
        rate=args.rate or None, burst=args.burst, token=args.token, port=args.port, retry_after_s=args.retry_after
    ).start()
    print(f"flaky API on {api.url} (rate {args.rate or 'unlimited'}/s, token {args.token!r}); Ctrl-C to stop", flush=True)
    if args.down_after:
        threading.Timer(args.down_after, api.down, (args.down_for, args.refuse)).start()
    if args.quota_after:
        threading.Timer(args.quota_after, api.refuse_all, (args.quota_for,)).start()
    try:
        while True:
            time.sleep(args.down_every or 3600)
            if args.down_every:
                api.down(5)
    except KeyboardInterrupt:
        api.stop()


if __name__ == "__main__":
    main()
