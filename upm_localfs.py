"""``upm-localfs``: the local provider's writes, never through a symbolic link.

Every mutation of a local resource runs this small pinned program (a console script of the
``upm`` package, found on the step's PATH like the project's own ``aws``) instead of coreutils:

    upm-localfs mkdir -m MODE PATH      upm-localfs rmdir PATH
    upm-localfs write [-m MODE] PATH    (the content on stdin; -m: create or replace with MODE,
                                         without: rewrite the content, keep the mode — dd's job)
    upm-localfs chmod MODE PATH         upm-localfs chown OWNER PATH
    upm-localfs ln -s TARGET PATH       upm-localfs ln -sfn TARGET PATH (replace)
    upm-localfs rm -f PATH              upm-localfs serve (the same, as requests over a pipe: below)

It opens the path one component at a time from ``/``, each with ``O_NOFOLLOW`` relative to the
directory opened before (an ``openat`` walk), and acts on the last name relative to that
directory, on the file it opened itself. So no component (not only the last one) is ever
followed when it is a symbolic link, and there is no gap between a check and the use: what is
checked is the open file descriptor that is then written. ``coreutils`` cannot do this: ``dd
oflag=nofollow`` guards the last component only, ``chmod`` has no ``-h`` on Linux, and a
directory swapped for a link between two commands would be followed.

A regular file with other hard links is refused too (writing it, or changing its mode or owner,
would change the file behind the other name). :func:`symlink_in` is the same walk read-only
(``lstat`` per component), for pre-flight.

Exit status: 0 done, 1 refused or failed (the message on stderr says which component and why),
2 bad usage.

``upm-localfs serve`` answers the same requests over a pipe, one at a time, so that a step costs
a millisecond instead of an interpreter's start (the guard keeps such workers:
:mod:`services.guard.worker`). Requests come on stdin and replies go to stdout in the serve
workers' protocol (:mod:`upm_serve`: one JSON line each): exactly what ``upm-localfs ARGV`` run
as a process with that stdin would exit with and print (:func:`answer`; bad usage is rc 2 and
does not end the worker; ``serve`` itself is bad usage there). It ends at the end of its stdin; a request
cut short by it is never acted on. A worker keeps the environment, working directory, umask and
user it was started with.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import pwd
import stat
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import BinaryIO

import upm_serve
from upm_serve import decode_reply as decode_reply  # the protocol, for callers (re-exported)
from upm_serve import decode_request as decode_request
from upm_serve import encode_reply as encode_reply
from upm_serve import encode_request as encode_request

NAME = "upm-localfs"
VERSION = "1.1"
"""Bump when the helper's behaviour changes: it is pinned (``providers.local.HELPER``)."""

_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Refused(Exception):
    """The path cannot be acted on safely; the message names the component and why."""


def components(path: str) -> list[str]:
    """The names of an absolute ``path`` below ``/`` (pure); refuses empty, ``.`` and ``..`` parts."""
    if not path.startswith("/") or path == "/":
        raise Refused(f"{path!r}: give an absolute path below / (it is {'/' if path == '/' else 'relative'})")
    names = path[1:].split("/")
    bad = next((n for n in names if n in ("", ".", "..")), None)
    if bad is not None:
        raise Refused(f"{path!r} has an empty, '.' or '..' component ({bad!r}); give the plain path")
    return names


def symlink_in(path: str) -> str | None:
    """The first component of ``path`` (from ``/``) that is a symbolic link, else ``None``
    (components that do not exist yet end the walk: nothing there can be a link)."""
    current = ""
    for name in components(path):
        current = f"{current}/{name}"
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None
        if stat.S_ISLNK(mode):
            return current
    return None


@contextlib.contextmanager
def parent_of(path: str) -> Iterator[tuple[int, str]]:
    """``(fd of the parent directory, last name)``: the parent opened component by component
    from ``/`` with ``O_NOFOLLOW``; a link anywhere on the way is refused, naming it."""
    names = components(path)
    fd = os.open("/", _DIR)
    try:
        walked = ""
        for name in names[:-1]:
            walked = f"{walked}/{name}"
            try:
                step = os.open(name, _DIR, dir_fd=fd)
            except OSError as err:
                raise _refusal(fd, name, walked, err) from None
            os.close(fd)
            fd = step
        yield fd, names[-1]
    finally:
        os.close(fd)


def _refusal(fd: int, name: str, walked: str, err: OSError) -> Exception:
    if err.errno in (errno.ENOTDIR, errno.ELOOP):
        with contextlib.suppress(OSError):
            if stat.S_ISLNK(os.lstat(name, dir_fd=fd).st_mode):
                return Refused(f"{walked} is a symbolic link; UPM never follows one (rule path-symlink): "
                               "give the real path")
        return Refused(f"{walked} is not a directory")
    return Refused(f"{walked}: {err.strerror}")


@contextlib.contextmanager
def _opened(parent: int, name: str, path: str) -> Iterator[tuple[int, os.stat_result]]:
    """The last component itself (``O_PATH``, not followed) and its status; a link is refused."""
    try:
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    except OSError as err:
        raise Refused(f"{path}: {err.strerror}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISLNK(info.st_mode):
            raise Refused(f"{path} is a symbolic link; UPM never follows one (rule path-symlink)")
        if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
            raise Refused(f"{path} has {info.st_nlink - 1} other hard link(s); UPM does not change a file "
                          "through one name behind another's back: remove the other links first")
        yield fd, info
    finally:
        os.close(fd)


def _by_fd(fd: int) -> str:
    """The opened file itself (``/proc/self/fd/N`` resolves to that inode, never to a name)."""
    return f"/proc/self/fd/{fd}"


def mkdir(path: str, mode: int) -> None:
    with parent_of(path) as (parent, name):
        os.mkdir(name, 0o700, dir_fd=parent)
        with _opened(parent, name, path) as (fd, _):
            os.chmod(_by_fd(fd), mode)  # exact, as mkdir -m: the umask does not apply


def rmdir(path: str) -> None:
    with parent_of(path) as (parent, name):
        os.rmdir(name, dir_fd=parent)


def write(path: str, data: bytes, mode: int | None) -> None:
    """Create or truncate the regular file ``path`` and write ``data``; ``mode``: set it exactly."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    with parent_of(path) as (parent, name):
        try:
            fd = os.open(name, flags, 0o600 if mode is not None else 0o666, dir_fd=parent)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise Refused(f"{path} is a symbolic link; UPM never follows one (rule path-symlink)") from None
            raise
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise Refused(f"{path} is not a regular file")
            if info.st_nlink > 1:
                raise Refused(f"{path} has {info.st_nlink - 1} other hard link(s); remove them first")
            os.ftruncate(fd, 0)
            if mode is not None:
                os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)


def chmod(path: str, mode: int) -> None:
    with parent_of(path) as (parent, name), _opened(parent, name, path) as (fd, _):
        os.chmod(_by_fd(fd), mode)


def chown(path: str, owner: str) -> None:
    try:
        uid = pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise Refused(f"no user named {owner!r} on this machine") from None
    with parent_of(path) as (parent, name), _opened(parent, name, path) as (fd, _):
        os.chown(_by_fd(fd), uid, -1)


def ln(target: str, path: str, *, replace: bool) -> None:
    with parent_of(path) as (parent, name):
        if not replace:
            os.symlink(target, name, dir_fd=parent)
            return
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISDIR(os.lstat(name, dir_fd=parent).st_mode):
                raise Refused(f"{path} is a directory, not a link: remove it first")
        temporary = f".{name}.upm-{os.getpid()}"
        os.symlink(target, temporary, dir_fd=parent)
        try:
            os.replace(temporary, name, src_dir_fd=parent, dst_dir_fd=parent)
        except OSError:  # a worker keeps its pid: never leave the name taken for its next request
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=parent)
            raise


def rm(path: str) -> None:
    """Remove the file or link ``path`` (not what a link points to); absent is fine, as ``rm -f``."""
    with parent_of(path) as (parent, name), contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=parent)


def _mode(text: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an octal mode like 0750") from None
    if not 0 <= value <= 0o7777:
        raise argparse.ArgumentTypeError(f"{text!r} is not a file mode")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=NAME, description="The local provider's writes, never through a link.")
    parser.add_argument("--version", action="version", version=f"{NAME} {VERSION}")
    sub = parser.add_subparsers(dest="verb", required=True)
    p = sub.add_parser("mkdir")
    p.add_argument("-m", dest="mode", type=_mode, required=True)
    p.add_argument("path")
    sub.add_parser("rmdir").add_argument("path")
    p = sub.add_parser("write")
    p.add_argument("-m", dest="mode", type=_mode)
    p.add_argument("path")
    p = sub.add_parser("chmod")
    p.add_argument("mode", type=_mode)
    p.add_argument("path")
    p = sub.add_parser("chown")
    p.add_argument("owner")
    p.add_argument("path")
    p = sub.add_parser("ln")  # -s (symbolic: required), -sfn (replace what is there, never entering it)
    for flag in ("-s", "-f", "-n"):
        p.add_argument(flag, action="store_true", required=flag == "-s")
    p.add_argument("target")
    p.add_argument("path")
    p = sub.add_parser("rm")
    p.add_argument("-f", action="store_true", required=True)
    p.add_argument("path")
    sub.add_parser("serve")  # requests on stdin, replies on stdout (see the module docstring)
    return parser


def _action(args: argparse.Namespace) -> Callable[[], None]:
    verbs: dict[str, Callable[[], None]] = {
        "mkdir": lambda: mkdir(args.path, args.mode),
        "rmdir": lambda: rmdir(args.path),
        "write": lambda: write(args.path, sys.stdin.buffer.read(), args.mode),
        "chmod": lambda: chmod(args.path, args.mode),
        "chown": lambda: chown(args.path, args.owner),
        "ln": lambda: ln(args.target, args.path, replace=args.f),
        "rm": lambda: rm(args.path),
    }
    return verbs[args.verb]


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.verb == "serve":
        return serve(sys.stdin.buffer, sys.stdout.buffer)
    try:
        _action(args)()
    except Refused as err:
        print(f"{NAME}: refused: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"{NAME}: {args.verb} {args.path}: {err.strerror or err}", file=sys.stderr)
        return 1
    return 0


def answer(argv: Sequence[str], stdin: bytes) -> tuple[int, bytes, bytes]:
    """``(rc, stdout, stderr)``: what ``upm-localfs ARGV`` run as a process, with ``stdin`` on its
    stdin, exits with and writes (:func:`upm_serve.answer`: bad usage is 2; an unexpected error is
    its traceback and 1). ``serve`` itself is bad usage here."""
    return upm_serve.answer(lambda: _status(argv), stdin)


def _status(argv: Sequence[str]) -> int:
    if list(argv[:1]) == ["serve"]:
        print(f"{NAME}: serve: a worker is already serving; send a verb", file=sys.stderr)
        return 2
    return main(argv)


def serve(requests: BinaryIO, replies: BinaryIO) -> int:
    """Answer request lines from ``requests`` on ``replies``, one at a time, until the end of
    ``requests`` (:func:`upm_serve.serve`)."""
    return upm_serve.serve(requests, replies, answer, NAME)


if __name__ == "__main__":  # pragma: no cover - the console script calls main()
    sys.exit(main())
