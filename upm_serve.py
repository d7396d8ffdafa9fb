"""The protocol of UPM's serve workers: one JSON line per request and per reply, over a pipe.

A program the guard keeps long-lived workers of (:mod:`services.guard.worker`: the local writer
``upm-localfs serve``, the pinned awscli's ``upm-aws-serve``) answers requests one at a time.
Each request is one line ``{"argv": [...], "stdin": BASE64}`` (``argv`` without the program
name); each reply one line ``{"rc": N, "stdout": BASE64, "stderr": BASE64}``: exactly what the
program run as a process with that argv and stdin would exit with and print (:func:`answer`).
A worker whose program checks what it stands for first (``upm-aws-serve``) writes one hello
line before any reply (:func:`encode_hello`). A worker ends at the end of its requests; a last line cut short (no newline) is never acted on.

This module is a lone one, imported by the workers' console scripts before anything else, so it
imports nothing of UPM's and little of the standard library.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO, TextIO

Answer = Callable[[Sequence[str], bytes], tuple[int, bytes, bytes]]
"""What a worker does with one request's ``(argv, stdin)``: its ``(rc, stdout, stderr)``."""


def encode_request(argv: Sequence[str], stdin: bytes) -> bytes:
    """One request line: the arguments after the program name, and the bytes on its stdin."""
    return _line({"argv": list(argv), "stdin": base64.b64encode(stdin).decode("ascii")})


def decode_request(line: bytes) -> tuple[list[str], bytes]:
    """``(argv, stdin)`` of a request line; :class:`ValueError` when it is not one."""
    request = _object(line)
    argv = request.get("argv")
    if not isinstance(argv, list) or not all(isinstance(word, str) for word in argv):
        raise ValueError("'argv' must be a list of strings")
    return argv, _bytes(request, "stdin")


def encode_reply(rc: int, stdout: bytes, stderr: bytes) -> bytes:
    """One reply line: the exit status and the bytes written to stdout and stderr."""
    return _line({"rc": rc, "stdout": base64.b64encode(stdout).decode("ascii"),
                  "stderr": base64.b64encode(stderr).decode("ascii")})


def decode_reply(line: bytes) -> tuple[int, bytes, bytes]:
    """``(rc, stdout, stderr)`` of a reply line; :class:`ValueError` when it is not one."""
    reply = _object(line)
    rc = reply.get("rc")
    if not isinstance(rc, int) or isinstance(rc, bool):
        raise ValueError("'rc' must be an integer")
    return rc, _bytes(reply, "stdout"), _bytes(reply, "stderr")


def encode_hello(refused: str | None, serving: str = "") -> bytes:
    """A worker's first line, for a program whose worker checks what it stands for before it serves
    (``upm-aws-serve``): ``{"serving": WHAT}``, or ``{"refused": WHY}`` (it then exits)."""
    if refused is not None:
        return _line({"refused": refused})
    return _line({"serving": serving})


def decode_hello(line: bytes) -> str | None:
    """Why the worker refused (None when it serves); :class:`ValueError` when it is not a hello."""
    hello = _object(line)
    if isinstance(hello.get("refused"), str):
        return str(hello["refused"])
    if isinstance(hello.get("serving"), str):
        return None
    raise ValueError("neither 'serving' nor 'refused'")


def _line(message: dict[str, object]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode("ascii") + b"\n"


def _object(line: bytes) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except ValueError as err:  # UnicodeDecodeError and json's JSONDecodeError are ValueErrors
        raise ValueError(f"not JSON: {err}") from None
    if not isinstance(message, dict):
        raise ValueError("not a JSON object")
    return message


def _bytes(message: dict[str, Any], name: str) -> bytes:
    text = message.get(name)
    if not isinstance(text, str):
        raise ValueError(f"{name!r} must be base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as err:
        raise ValueError(f"{name!r} is not base64: {err}") from None


def answer(run: Callable[[], int | None], stdin: bytes) -> tuple[int, bytes, bytes]:
    """``(rc, stdout, stderr)``: what ``run()`` exits with and writes when it is a process's whole
    work, with ``stdin`` on its stdin. ``sys.stdin``/``stdout``/``stderr`` are streams over memory
    for the call (same codecs as the real ones); its result and ``SystemExit`` are mapped as the
    interpreter maps them at exit (None 0, an int its low byte, anything else printed and 1); an
    unexpected exception is its traceback and 1, as an uncaught one ends a process."""
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin = _stream(saved[0], io.BytesIO(stdin))
    sys.stdout, sys.stderr = out, err = _stream(saved[1], io.BytesIO()), _stream(saved[2], io.BytesIO())
    try:
        rc = _status(run)
        out.flush()
        err.flush()
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved
    return rc, _written(out), _written(err)


def _status(run: Callable[[], int | None]) -> int:
    try:
        return _exit_status(run())
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            return _exit_status(stop.code)
        print(stop.code, file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        return 1


def _exit_status(code: int | None) -> int:
    return (code or 0) & 0xFF


def _stream(like: TextIO, raw: io.BytesIO) -> io.TextIOWrapper:
    """A text stream over ``raw`` with the codec and error handler of the real stream ``like``."""
    return io.TextIOWrapper(raw, encoding=like.encoding, errors=like.errors, write_through=True)


def _written(stream: io.TextIOWrapper) -> bytes:
    raw = stream.buffer
    assert isinstance(raw, io.BytesIO)
    return raw.getvalue()


def serve(requests: BinaryIO, replies: BinaryIO, respond: Answer, name: str) -> int:
    """Answer request lines from ``requests`` on ``replies`` with ``respond``, one at a time, until
    the end of ``requests`` (a last line without its newline was cut short: it is not acted on).
    A line that is not a request gets rc 2 and ``name: serve: not a request: ...``."""
    while True:
        line = requests.readline()
        if not line.endswith(b"\n"):
            return 0
        try:
            argv, data = decode_request(line)
        except ValueError as err:
            reply = encode_reply(2, b"", f"{name}: serve: not a request: {err}\n".encode())
        else:
            reply = encode_reply(*respond(argv, data))
        replies.write(reply)
        replies.flush()
