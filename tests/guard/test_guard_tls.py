"""The TLS fallback against a real local TLS endpoint with an untrusted certificate, and real curl."""

from __future__ import annotations

import http.server
import os
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from guard_helpers import MakeScript, pinned

from services.guard import DEFAULT_PINS, PROFILES, GuardPolicy, Pin, PinTable, RunSpec, profile_for, run

OPENSSL = "/usr/bin/openssl"
CURL = "/usr/bin/curl"


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello over tls\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def untrusted_https(tmp_path: Path) -> Iterator[str]:
    """An HTTPS server on 127.0.0.1 with a fresh self-signed certificate; yields its URL."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def curl_pins() -> PinTable:
    """curl pinned at the version this machine's curl reports."""
    version = subprocess.run([CURL, "--version"], capture_output=True, text=True, check=True).stdout.split()[
        1
    ]
    return DEFAULT_PINS.with_pins(Pin(binary="curl", version=version))


async def test_certificate_error_triggers_exactly_one_insecure_retry(untrusted_https: str) -> None:
    spec = RunSpec(pins=curl_pins(), policy=GuardPolicy(allow_tls_fallback=True), timeout_s=20)
    result = await run(f"curl -sS {untrusted_https}", spec)
    assert result.ok and result.stdout == "hello over tls\n"
    assert result.tls_fallback_used
    first, second = result.attempts
    assert (first.verdict, first.rc, first.tls_fallback) == ("tls", 60, False)
    assert "certificate" in first.stderr_tail
    assert (second.verdict, second.tls_fallback, second.backoff_s) == ("ok", True, 0.0)
    assert second.command == f"curl --insecure -sS {untrusted_https}"
    assert result.command == second.command
    (warning,) = result.warnings
    assert (warning.level, warning.kind, warning.attempt) == ("warning", "tls-fallback", 2)
    assert "--insecure" in warning.message and warning.command == second.command


async def test_a_policy_can_forbid_the_fallback(untrusted_https: str) -> None:
    result = await run(f"curl -sS {untrusted_https}", RunSpec(pins=curl_pins(), timeout_s=20))
    assert not GuardPolicy().allow_tls_fallback  # the safe default
    assert not result.ok and result.rc == 60
    assert len(result.attempts) == 1 and result.warnings == ()
    assert not result.tls_fallback_used
    assert "policy forbids" in result.reason


async def test_the_fallback_is_tried_once_even_if_it_fails_again(
    make_script: MakeScript, tmp_path: Path
) -> None:
    log = tmp_path / "argv"
    always = make_script(
        "always-bad-cert",
        f"open({os.fspath(log)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        "sys.stderr.write('curl: (60) SSL certificate problem: self-signed certificate\\n')\nsys.exit(60)\n",
    )
    spec = RunSpec(
        pins=pinned(always), policy=GuardPolicy(allow_tls_fallback=True), provider="curl", max_attempts=3
    )
    result = await run(f"{always} https://x", spec)
    assert [a.tls_fallback for a in result.attempts] == [False, True]
    assert log.read_text().splitlines() == ["https://x", "--insecure https://x"]
    assert "also without verification" in result.reason


async def test_az_skips_verification_through_its_environment(make_script: MakeScript) -> None:
    az = make_script(
        "az-like",
        "if os.environ.get('AZURE_CLI_DISABLE_CONNECTION_VERIFICATION') != '1':\n"
        "    sys.stderr.write('SSLError: CERTIFICATE_VERIFY_FAILED\\n')\n    sys.exit(1)\nprint('ok')\n",
    )
    spec = RunSpec(pins=pinned(az), policy=GuardPolicy(allow_tls_fallback=True), provider="az")
    result = await run(f"{az} group list", spec)
    assert result.ok and [a.tls_fallback for a in result.attempts] == [False, True]
    assert result.command == f"{az} group list"
    assert "AZURE_CLI_DISABLE_CONNECTION_VERIFICATION=1" in result.warnings[0].message


async def test_a_cli_without_an_insecure_mode_does_not_fall_back(make_script: MakeScript) -> None:
    psql = make_script(
        "psql-like", "sys.stderr.write('SSL error: certificate verify failed\\n')\nsys.exit(2)\n"
    )
    spec = RunSpec(pins=pinned(psql), policy=GuardPolicy(allow_tls_fallback=True), provider="psql")
    result = await run(os.fspath(psql), spec)
    assert len(result.attempts) == 1 and "psql has no way" in result.reason


def test_each_cli_has_its_own_way_to_skip_verification() -> None:
    argv = ("kubectl-1.29", "get", "ns")
    assert profile_for("kubectl-1.29").with_tls_fallback(argv, {})[0] == (
        "kubectl-1.29", "--insecure-skip-tls-verify", "get", "ns"
    )  # fmt: skip
    assert profile_for("/usr/bin/aws").with_tls_fallback(("aws", "s3", "ls"), {})[0] == (
        "aws", "--no-verify-ssl", "s3", "ls"
    )  # fmt: skip
    assert profile_for("curl").tls_args == ("--insecure",)
    assert profile_for("az").with_tls_fallback(("az",), {"A": "1"})[1] == {
        "A": "1",
        "AZURE_CLI_DISABLE_CONNECTION_VERIFICATION": "1",
    }
    assert profile_for("unknown-cli") is PROFILES["generic"]
    assert not PROFILES["psql"].has_tls_fallback


@pytest.mark.parametrize(
    ("profile", "rc", "stderr", "kind"),
    [
        ("curl", 7, "curl: (7) Failed to connect", "retryable"),
        ("curl", 56, "curl: (56) Recv failure: Connection reset by peer", "retryable"),
        ("curl", 22, "curl: (22) The requested URL returned error: 503", "retryable"),
        ("curl", 22, "curl: (22) The requested URL returned error: 404", "fatal"),
        ("curl", 60, "curl: (60) SSL certificate problem", "tls"),
        ("aws", 255, "An error occurred (Throttling) when calling X: Rate exceeded", "retryable"),
        ("aws", 254, "An error occurred (AccessDenied) when calling X", "fatal"),
        ("kubectl", 1, "Error from server (ServiceUnavailable): the server is currently unable", "retryable"),
        (
            "kubectl",
            1,
            "Unable to connect to the server: x509: certificate signed by unknown authority",
            "tls",
        ),
        ("kubectl", 1, 'Error from server (NotFound): namespaces "x" not found', "fatal"),
        ("az", 1, "(TooManyRequests) Too many requests", "retryable"),
        ("psql", 2, "FATAL:  the database system is starting up", "retryable"),
        ("psql", 2, 'FATAL:  password authentication failed for user "app"', "fatal"),
        ("generic", 0, "", "ok"),
    ],
)
def test_failures_are_classified_per_cli(profile: str, rc: int, stderr: str, kind: str) -> None:
    assert PROFILES[profile].classify(rc, stderr, timed_out=False).kind == kind
