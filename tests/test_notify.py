"""notify_url against a real local HTTP server that misbehaves: it must never crash the notifier's thread, follow a
redirect into a GET, drop credentials, or print the URL's token."""

from __future__ import annotations

import base64
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import PROJECTS

JOB = PROJECTS / "unattended" / "job.py"
TOKEN = "TOKEN789"


class Endpoint(BaseHTTPRequestHandler):
    """Behaves by path: ``/ok`` records the POST; ``/moved`` redirects (302); ``/garbage`` answers what is not HTTP;
    ``/short`` cuts its body short; ``/flaky`` answers 500 once, then records."""

    def do_POST(self) -> None:
        server: Any = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        path = self.path.split("?")[0]
        server.requests.append(("POST", path, body, self.headers.get("Authorization")))
        if path == "/moved":
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{server.server_port}/final?key={TOKEN}")
            self.end_headers()
        elif path == "/garbage":
            self.wfile.write(b"this is not HTTP\r\n\r\n")
        elif path == "/short":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"short")
            self.close_connection = True
        elif path == "/flaky" and sum(1 for r in server.requests if r[1] == "/flaky") == 1:
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send_response(204)
            self.end_headers()

    def do_GET(self) -> None:
        self.server.requests.append(("GET", self.path.split("?")[0], None, None))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[Any]:
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    server.requests = []
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def run(cli: Any, tmp_path: Path, url: str) -> tuple[Any, str]:
    outcome = cli("exec", JOB, "-d", tmp_path / "out", "-p", "count=3", "-p", "delay_s=0", "-p", f"notify_url={url}",
                  "-p", f"ledger={tmp_path / 'ledger'}", "--no-shell")  # fmt: skip
    assert outcome.exit_code == 0, outcome.output
    return outcome, (outcome.run_dir / "batchcli.log").read_text()


@pytest.mark.parametrize(
    ("url", "said"),
    [
        (f"http://127.0.0.1:9/hook?key=QUERY {TOKEN}", "a space or a control character"),
        (f"http://[::1/hook?key={TOKEN}", "Invalid IPv6 URL"),
        (f"http://127.0.0.1:99999/hook?key={TOKEN}", "Port out of range"),
        (f"http:///hook?key={TOKEN}", "names no host"),
        (f"http://127.0.0.1:0/hook?key={TOKEN}", "its port is 0"),
    ],
)
def test_a_notify_url_the_http_client_would_refuse_is_refused_before_the_run(cli: Any, url: str, said: str) -> None:
    """Such a URL used to be found out by the notifier's thread at the end of the night (a traceback on stderr with
    the token in it, no warning in the log): it is bad input now, said without the URL."""
    outcome = cli("exec", JOB, "-p", "count=1", "-p", f"notify_url={url}")
    assert outcome.exit_code == 2, outcome.output
    assert said in outcome.output and "notify_url must be an http:// or https:// URL" in outcome.output
    assert TOKEN not in outcome.output and "Traceback" not in outcome.output
    assert outcome.run_dir is None


@pytest.mark.parametrize("path", ["/garbage", "/short"])
def test_an_endpoint_that_does_not_answer_in_http_is_a_warning_with_no_token(
    cli: Any, tmp_path: Path, endpoint: Any, path: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """A non-HTTP answer or a body cut short ended the notifier's thread with a traceback and no log line: now each
    try fails like a refused connection, the run's log says so, and nothing prints the URL's query."""
    url = f"http://127.0.0.1:{endpoint.server_port}{path}?key={TOKEN}"
    outcome, log = run(cli, tmp_path, url)
    assert f"Could not send the 'finished' notification to http://127.0.0.1:{endpoint.server_port}" in log
    assert ("BadStatusLine" if path == "/garbage" else "IncompleteRead") in log
    assert len([r for r in endpoint.requests if r[1] == path]) == 3  # tried three times, as a refused connection is
    captured = capfd.readouterr()
    assert "Exception in thread" not in captured.err + captured.out + outcome.output
    assert TOKEN not in log + outcome.output + captured.err + captured.out


def test_a_redirect_is_reported_and_not_followed_as_a_get(cli: Any, tmp_path: Path, endpoint: Any) -> None:
    """urllib turns a redirected POST into a GET without its body, and the log said the notification was sent: the
    redirect is a warning now, saying where it points (without its query), and nothing is sent there."""
    outcome, log = run(cli, tmp_path, f"http://127.0.0.1:{endpoint.server_port}/moved")
    assert [r[:2] for r in endpoint.requests] == [("POST", "/moved")]
    assert f"it answered 302 with a redirect to http://127.0.0.1:{endpoint.server_port}/...: point notify_url there" in log
    assert "sent to" not in log and TOKEN not in log + outcome.output


def test_credentials_in_the_url_are_sent_as_basic_authentication(cli: Any, tmp_path: Path, endpoint: Any) -> None:
    """``http://user:password@host/...`` was looked up as a host named ``user:password@host`` and never delivered."""
    outcome, log = run(cli, tmp_path, f"http://robot:{TOKEN}@127.0.0.1:{endpoint.server_port}/ok")
    ((method, path, body, authorization),) = endpoint.requests
    assert (method, path, body["event"]) == ("POST", "/ok", "finished")
    assert authorization == "Basic " + base64.b64encode(f"robot:{TOKEN}".encode()).decode()
    assert f"Notification 'finished' sent to http://127.0.0.1:{endpoint.server_port}" in log
    assert TOKEN not in log + outcome.output


def test_every_try_of_a_notification_carries_the_same_id(cli: Any, tmp_path: Path, endpoint: Any) -> None:
    """An endpoint that got a try it answered too late (or with a 500) can tell the next try is the same notification."""
    run(cli, tmp_path, f"http://127.0.0.1:{endpoint.server_port}/flaky")
    first, second = (r[2] for r in endpoint.requests)
    assert first["id"] == second["id"] and len(first["id"]) == 32
    assert first == second


def test_an_unused_port_is_still_only_a_warning(cli: Any, tmp_path: Path) -> None:
    """The plain failure keeps working as before: refused three times, one warning, the run's own exit code."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    outcome, log = run(cli, tmp_path, f"http://127.0.0.1:{port}/hook?key={TOKEN}")
    assert "Could not send the 'finished' notification" in log and "Connection refused" in log
    assert TOKEN not in log


def test_a_crash_notification_masks_the_jobs_secrets(cli: Any, tmp_path: Path, endpoint: Any) -> None:
    """The 'crashed' notification carried the fatal error's message as it was, a token the job's Secret holds in it,
    though the output, the log and summary.json masked it: it is masked in what is sent too."""
    secret = "sk-live-4242-abcd"
    outcome = cli(
        "exec", PROJECTS / "ux_secrets" / "job.py", "-d", tmp_path / "out", "-p", "refused=true",
        "-p", f"api_token={secret}", "-p", f"notify_url=http://127.0.0.1:{endpoint.server_port}/ok",
    )  # fmt: skip
    assert outcome.exit_code == 3, outcome.output
    (crashed,) = [body for method, path, body, _ in endpoint.requests if body["event"] == "crashed"]
    assert crashed["fatal"] == "PermissionError: login refused for token ********"
    assert secret not in json.dumps(endpoint.requests)


def test_an_upper_case_scheme_is_a_url_like_any_other(cli: Any, tmp_path: Path, endpoint: Any) -> None:
    """A URL's scheme is case-insensitive: ``HTTP://`` was refused as "neither http:// nor https://"."""
    outcome, log = run(cli, tmp_path, f"HTTP://127.0.0.1:{endpoint.server_port}/ok")
    assert [(method, path, body["event"]) for method, path, body, _ in endpoint.requests] == [("POST", "/ok", "finished")]
