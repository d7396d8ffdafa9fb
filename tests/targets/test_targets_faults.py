"""A target that fails transiently, then answers: the real ``aws`` CLI against moto behind the conformance
run's fault front (upm/faultfront.py). The guard's retry policy is the only one (botocore's own would
swallow the failure and nothing would be logged), and each retried attempt says why in the target's words."""

from __future__ import annotations

import http.client
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from services.guard.steps import execute
from services.planner import CompileInput, compile_intent
from services.security.secrets import SecretsConfig
from upm.emulators import AwsTarget
from upm.faultfront import Answer, FaultFront


@pytest.fixture
def front(aws_target: AwsTarget, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultFront]:
    assert aws_target.endpoint
    front = FaultFront()
    monkeypatch.setenv("UPM_AWS_ENDPOINT", front.start(aws_target.endpoint))
    monkeypatch.setenv("UPM_AWS_REGION", aws_target.region)
    yield front
    front.stop()


async def test_a_transient_failure_is_retried_by_the_guard_and_logged(aws_target: AwsTarget,
                                                                      front: FaultFront) -> None:
    (step,) = compile_intent(CompileInput(request="Create ssm parameter /t/flaky with value enabled plain")).steps
    front.answer(Answer(operation="PutParameter", match="/t/flaky", times=2, status=503, code="ServiceUnavailable",
                        message="Service is temporarily unavailable"))
    creds = {"AWS_ACCESS_KEY_ID": aws_target.root_key_id, "AWS_SECRET_ACCESS_KEY": aws_target.root_secret}
    done = await execute(step.command, stdin=step.stdin, env=creds, max_attempts=3, timeout_s=60)
    assert [t.verdict for t in done.output.tries] == ["retryable", "retryable", "ok"], done.output
    assert front.answered == ["/t/flaky", "/t/flaky"]  # the CLI asked once per attempt: no hidden retries
    assert "(ServiceUnavailable)" in done.output.tries[0].stderr_tail
    assert done.output.tries[1].backoff_s > 0


async def test_a_value_the_target_quotes_back_is_masked(aws_target: AwsTarget, front: FaultFront,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPM_SECRET_FRONT_TOKEN", "AKIAFRONTTEST0VALUE0")
    request = "Create ssm parameter /t/quoted with value secret:FRONT_TOKEN"
    (step,) = compile_intent(CompileInput(request=request)).steps
    front.answer(Answer(operation="PutParameter", match="/t/quoted", status=500, code="InternalServerError",
                        message="could not store Value '{value}'"))
    creds = {"AWS_ACCESS_KEY_ID": aws_target.root_key_id, "AWS_SECRET_ACCESS_KEY": aws_target.root_secret}
    done = await execute(step.command, stdin=step.stdin, env=creds, max_attempts=2, timeout_s=60,
                         resolver=SecretsConfig().resolver())
    assert [t.verdict for t in done.output.tries] == ["retryable", "ok"], done.output
    assert "could not store Value '***'" in done.output.tries[0].stderr_tail
    assert "AKIAFRONTTEST0VALUE0" not in repr(done.output)


def test_a_chunked_request_is_forwarded_whole() -> None:
    """The front reads a chunked body and passes it on with its length (a real HTTP server behind it)."""
    class Echo(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    front = FaultFront()
    endpoint = urllib.parse.urlsplit(front.start(f"http://127.0.0.1:{upstream.server_address[1]}"))
    try:
        conn = http.client.HTTPConnection(endpoint.hostname or "", endpoint.port, timeout=10)
        conn.request("PUT", "/k", body=iter([b"abc", b"defg"]), encode_chunked=True)
        got = conn.getresponse()
        assert (got.status, got.read()) == (200, b"abcdefg")
        conn.close()
    finally:
        front.stop()
        upstream.shutdown()
        upstream.server_close()
