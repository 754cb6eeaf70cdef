"""coglet answers 409 "At capacity" for a moment after a prediction ends (measured on
coglet 0.21-0.23.1, see README): every client we ship retries it with a short backoff."""

from __future__ import annotations

import http.server
import json
import textwrap
import threading

import pytest

from tools.server import predict, running


class BusyThenFree(http.server.BaseHTTPRequestHandler):
    busy_answers = 0
    calls: list[dict] = []

    def do_POST(self):
        cls = type(self)
        cls.calls.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        busy = len(cls.calls) <= cls.busy_answers
        payload = {"detail": "At capacity - all prediction slots busy"}
        if not busy:
            payload = {"status": "succeeded", "output": "ok"}
        raw = json.dumps(payload).encode()
        self.send_response(409 if busy else 200)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_coglet():
    def start(busy_answers: int) -> str:
        handler = type("Handler", (BusyThenFree,), {"busy_answers": busy_answers, "calls": []})
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        servers.append(httpd)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{httpd.server_port}"

    servers = []
    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def test_409_is_retried_until_the_slot_is_free(fake_coglet):
    url = fake_coglet(busy_answers=3)
    seen = []
    status, body = predict(url, {"prompt": "x"}, on_busy=lambda: seen.append(1))
    assert (status, body["status"], len(seen)) == (200, "succeeded", 3)


def test_409_is_returned_once_the_wait_is_over(fake_coglet):
    url = fake_coglet(busy_answers=1000)
    status, body = predict(url, {"prompt": "x"}, busy_wait=0.3)
    assert status == 409 and "At capacity" in body["detail"]


TRIVIAL = """
from cog import BaseRunner, Input


class Predictor(BaseRunner):
    def run(self, fail: bool = Input(default=False, description="Fail on purpose.")) -> str:
        if fail:
            raise ValueError("failed on purpose")
        return "ok"
"""


@pytest.mark.server
def test_200_back_to_back_requests_lose_none_to_a_409(tmp_path):
    (tmp_path / "predict.py").write_text(textwrap.dedent(TRIVIAL))
    busy = []
    statuses = []
    with running("predict.py:Predictor", root=tmp_path) as url:
        for i in range(200):
            fail = i % 3 == 0  # coglet's race follows failures and successes alike
            status, body = predict(url, {"fail": fail}, on_busy=lambda: busy.append(1))
            assert status == 200, body
            statuses.append(body["status"])
            assert body["status"] == ("failed" if fail else "succeeded"), body
    assert len(statuses) == 200
    print(f"409 answers retried: {len(busy)}")
