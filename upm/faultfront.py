"""A fault-injecting front for the conformance run's AWS target: transient failures on purpose.

An HTTP server on a free loopback port that passes every request to the moto server behind it,
except the requests an :class:`Answer` matches (its ``match`` bytes in the request's path or body):
the first ``times`` of those get the answer's error (status, AWS error code, message) instead, and
the next ones go through. It is how the conformance set exercises what moto alone never does: a
target that fails transiently, then succeeds (the guard's retry after a backoff), and a target whose
error message quotes the request it was given (a secret fed on stdin must be masked in the
recorded output). ``{value}`` in a message is the request's ``Value`` field (an SSM parameter's).

It lives in the conformance process (a thread), so only ``upm conformance`` on embedded defaults has it.
"""

from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import msgspec

HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"})


class Answer(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The error the first ``times`` requests that contain ``match`` (of the AWS ``operation``, when
    given: the JSON protocol's ``X-Amz-Target`` suffix) get instead of the target's answer."""

    match: str
    operation: str = ""
    times: int = 1
    status: int = 503
    code: str = "ServiceUnavailable"
    message: str = "Service is temporarily unavailable, try again"


class FaultFront:
    """The front: ``start(upstream)`` returns its endpoint; :meth:`answer` adds a fault; :meth:`stop`."""

    def __init__(self) -> None:
        self._answers: list[list[Answer | int]] = []  # [answer, times left]
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.upstream = ""
        self.answered: list[str] = []

    def answer(self, answer: Answer) -> None:
        with self._lock:
            self._answers.append([answer, answer.times])

    def _fault(self, path: str, target: str, body: bytes) -> Answer | None:
        with self._lock:
            for item in self._answers:
                answer, left = item
                assert isinstance(answer, Answer) and isinstance(left, int)
                if left > 0 and target.endswith(answer.operation) and (answer.match in path or answer.match.encode() in body):
                    item[1] = left - 1
                    self.answered.append(answer.match)
                    return answer
        return None

    def start(self, upstream: str) -> str:
        """Listen on a free loopback port in front of ``upstream`` (``http://host:port``); the endpoint."""
        self.upstream = upstream
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _any(self) -> None:
                body = self._body()
                fault = front._fault(self.path, self.headers.get("X-Amz-Target", ""), body)
                if fault is not None:
                    self._reply(fault.status, _error_body(fault, body), {"Content-Type": "application/x-amz-json-1.1"})
                    return
                self._forward(body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _any

            def _body(self) -> bytes:
                if "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
                    return self.rfile.read(int(self.headers.get("Content-Length") or 0))
                chunks = []  # forwarded whole, with a Content-Length
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline().strip():  # trailers
                    pass
                return b"".join(chunks)

            def _forward(self, body: bytes) -> None:
                where = urllib.parse.urlsplit(front.upstream)
                conn = http.client.HTTPConnection(where.hostname or "127.0.0.1", where.port, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    got = conn.getresponse()
                    data = got.read()
                    self._reply(got.status, data, {k: v for k, v in got.getheaders()
                                                   if k.lower() not in HOP_HEADERS | {"content-length"}})
                finally:
                    conn.close()

            def _reply(self, status: int, data: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="upm-fault-front", daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _error_body(answer: Answer, request: bytes) -> bytes:
    """An AWS JSON-protocol error; ``{value}`` in its message is the request's ``Value``."""
    try:
        value = str(json.loads(request or b"{}").get("Value", ""))
    except (ValueError, AttributeError):
        value = ""
    return json.dumps({"__type": answer.code, "message": answer.message.replace("{value}", value)}).encode()
