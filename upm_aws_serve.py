"""``upm-aws-serve``: the pinned ``aws`` CLI (awscli) as a long-lived worker, not a process per call.

Started by the guard (:mod:`services.guard.worker`) as ``upm-aws-serve serve AWS VERSION DEV INO
MTIME``: AWS is the ``aws`` console script the pin verified, VERSION the pin's version, and DEV INO
MTIME that file's identity when it was verified. It is a console script of the ``upm`` package, so
it runs on the interpreter of the environment it is installed in, with awscli imported from it; it
is never ``python -m``: the guard runs no interpreter.

Before it serves anything it checks that it stands for that very ``aws`` and answers one line,
``{"serving": "aws-cli/X"}``, or ``{"refused": WHY}`` and exits 3 (the guard then runs ``aws`` as a
process for that key, as before):

* the file AWS still has the identity the pin verified (no swap since);
* its first line is ``#!`` and this interpreter (``sys.executable``): ``aws`` would run on it;
* its directory is this interpreter's scripts directory (``sysconfig``): it is this
  environment's console script, not a lookalike elsewhere;
* ``awscli`` imports from this environment's site-packages (not from a ``PYTHONPATH`` elsewhere),
  and ``awscli.__version__`` is the pinned version (or extends it after a dot, as a pin accepts).

Then it answers requests in the serve workers' protocol (:mod:`upm_serve`), one at a time: each
runs awscli's own entry point, ``awscli.clidriver.main()``, as the ``aws`` script does, with
``sys.argv`` the request's (``aws`` then its argv), ``sys.stdin``/``stdout``/``stderr`` streams over
memory for the call (awscli looks them up at each write: ``awscli.compat.get_stdout_text_writer``),
and the exit status the ``aws`` process would have: ``main()``'s result (awscli 1.x: 255 on a
service or an unexpected error, 252 on unknown options, 130 on an interrupt), or a
``SystemExit``'s code (argparse's usage errors: 2 or 252; ``--version``: 0), or 1 and the traceback
when something escapes awscli, as an interpreter's exit gives. Nothing a request does ends the
worker.

Each call builds a new CLI driver and botocore session, so credentials, region, endpoint and the
config files are read from the environment and the files at that call, as a new process reads
them. What would otherwise outlive a call in the interpreter is put back after it: the warnings
filters and their once-only registries (``--no-verify-ssl``'s warning shows on every call, as in a
process), the logging configuration (``--debug`` adds handlers), and awscli's history recorder.
The worker's own file descriptors 0 and 1 are ``/dev/null`` (requests and replies use copies of the
pipes it was given): a request that opens ``/dev/stdin`` reads nothing, as an ``aws`` process run
without stdin does, and nothing writing to fd 1 directly can corrupt a reply. The guard sends only
requests without stdin and without ``help`` (which runs a pager): those run as processes.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import sysconfig
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import upm_serve

NAME = "upm-aws-serve"
REFUSED = 3
"""Its exit status when it will not serve (after its ``refused`` line)."""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 6 or args[0] != "serve" or not all(word.isdigit() for word in args[3:]):
        print(f"usage: {NAME} serve AWS VERSION DEV INO MTIME", file=sys.stderr)
        return 2
    aws, version = args[1], args[2]
    identity = (int(args[3]), int(args[4]), int(args[5]))
    requests, replies = _own_pipes()
    if os.environ.get("LC_CTYPE", "") == "UTF-8":  # what the aws script does first
        os.environ["LC_CTYPE"] = "en_US.UTF-8"
    why, driver = refusal(aws, version, identity)
    serving = "" if driver is None else f"aws-cli/{sys.modules['awscli'].__version__}"
    replies.write(upm_serve.encode_hello(why, serving))
    replies.flush()
    if why is not None:
        return REFUSED
    return upm_serve.serve(requests, replies, lambda words, data: respond(driver, aws, words, data), NAME)


def refusal(aws: str, version: str, identity: tuple[int, int, int]) -> tuple[str | None, Any]:
    """Why this worker does not stand for ``aws`` pinned at ``version`` (None when it does), and
    the imported ``awscli.clidriver`` (see the module docstring)."""
    try:
        found = os.stat(aws)
        with open(aws, "rb") as script:
            first = script.readline().rstrip(b"\n")
    except OSError as err:
        return f"{aws}: {err.strerror or err}", None
    if (found.st_dev, found.st_ino, found.st_mtime_ns) != identity:
        return f"{aws} is not the file the pin verified (it was replaced)", None
    if first != b"#!" + os.fsencode(sys.executable):
        return f"{aws} does not run on this interpreter ({sys.executable}): its first line is {first[:200]!r}", None
    scripts = sysconfig.get_path("scripts")
    if os.path.realpath(os.path.dirname(aws)) != os.path.realpath(scripts):
        return f"{aws} is not in this interpreter's scripts directory ({scripts})", None
    try:
        awscli = importlib.import_module("awscli")  # untyped: no stubs
        driver = importlib.import_module("awscli.clidriver")
    except Exception as err:
        return f"awscli does not import: {err!r}", None
    site = os.path.realpath(sysconfig.get_path("purelib")) + os.sep
    if not os.path.realpath(awscli.__file__ or "").startswith(site):
        return f"awscli imports from {awscli.__file__}, not from this environment ({site})", None
    have = str(awscli.__version__)
    if have != version and not have.startswith(version + "."):
        return f"awscli here is {have}, the pin is {version}", None
    return None, driver


def respond(driver: Any, aws: str, argv: Sequence[str], stdin: bytes) -> tuple[int, bytes, bytes]:
    """``(rc, stdout, stderr)`` of ``aws ARGV`` run by ``driver`` (``awscli.clidriver``)."""
    sys.argv = [aws, *argv]
    with _kept(driver):
        return upm_serve.answer(driver.main, stdin)


@contextlib.contextmanager
def _kept(driver: Any) -> Iterator[None]:
    """Put back what a call may change in the interpreter: warnings, logging, awscli's history."""
    recorder = driver.HISTORY_RECORDER
    history = recorder._enabled, list(recorder._handlers)
    manager = logging.Logger.manager
    loggers = {name: _logger_state(lg) for name, lg in manager.loggerDict.items() if isinstance(lg, logging.Logger)}
    root, disabled = _logger_state(logging.root), manager.disable
    with warnings.catch_warnings():  # restores the filters; entering it forgets "already shown" marks
        warnings.onceregistry.clear()  # type: ignore[attr-defined]  # not in typeshed
        try:
            yield
        finally:
            warnings.onceregistry.clear()  # type: ignore[attr-defined]
            recorder._enabled, recorder._handlers = history[0], history[1]
            for name, lg in list(manager.loggerDict.items()):
                if isinstance(lg, logging.Logger):
                    _set_logger(lg, loggers.get(name, (logging.NOTSET, [], True, False)))
            _set_logger(logging.root, root)
            logging.disable(disabled)  # also clears the loggers' level caches


def _logger_state(logger: logging.Logger) -> tuple[int, list[logging.Handler], bool, bool]:
    return logger.level, list(logger.handlers), logger.propagate, logger.disabled


def _set_logger(logger: logging.Logger, state: tuple[int, list[logging.Handler], bool, bool]) -> None:
    logger.level, handlers, logger.propagate, logger.disabled = state
    logger.handlers[:] = handlers


def _own_pipes() -> tuple[Any, Any]:
    """Requests and replies on copies of fds 0 and 1, which become ``/dev/null``."""
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    return requests, replies


if __name__ == "__main__":  # pragma: no cover - the console script calls main()
    sys.exit(main())
