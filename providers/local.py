"""The ``local`` provider: directories, files and symlinks on this machine, with GNU coreutils.

Commands (argv, no shell):

Every write runs ``upm-localfs`` (:mod:`upm_localfs`, pinned as :data:`HELPER`), which
walks the path from ``/`` with ``O_NOFOLLOW`` on every component: no write ever goes through a
symbolic link. Its verbs mirror the coreutils they replace. The guard sends each such step to a
long-lived ``upm-localfs serve`` worker (:mod:`services.guard.worker`) rather than starting a
process per step: the same argv, checks, exit status and messages, for about a millisecond.

- directory: ``upm-localfs mkdir -m MODE PATH`` / ``upm-localfs rmdir PATH``; mode and owner
  changes are facets (``upm-localfs chmod MODE PATH``, ``upm-localfs chown OWNER PATH``).
- file: ``upm-localfs write -m MODE PATH`` with the content on the step's ``stdin`` (no shell,
  so no redirection); a content change is ``upm-localfs write PATH`` (truncates, then writes
  stdin; the mode stays); delete is ``upm-localfs rm -f PATH``. Re-writing is harmless, so a
  file's create has no guard. Its desired state holds the size and the sha256 of the bytes written (the content as
  UTF-8, as stdin is fed); an empty file has no digest: size 0 already says it all. Content may
  reference secrets (``${secret:NAME}``, or ``secret:NAME`` as the whole content): the plan holds
  the reference, the executor feeds the resolved value, and the size and digest are compared
  from the resolved value at verification (``services.security.secrets``).
- symlink: ``upm-localfs ln -s TARGET PATH``; update ``upm-localfs ln -sfn TARGET PATH``; delete
  ``upm-localfs rm -f PATH``.

Paths are absolute, with no ``.`` or ``..`` part, no trailing ``/``, and no control, bidi
(U+202A–U+202E, U+2066–U+2069) or zero-width (U+200B–U+200D, U+FEFF) character, DEL or tab:
refused when the plan is compiled, naming the character and its position. Where a tenant may
write (its roots) is :mod:`services.security.scope`.

Read-backs: ``stat -c %F:%a:%U[:%s] PATH`` (``:`` separated; no ``|`` in a plan, ever) and
``readlink -v PATH``; a regular file's content is then read back as ``sha256sum -- PATH`` (the
type's supplement), so an edit that keeps the size is drift too. Both batch: one ``stat`` and one
``sha256sum`` over many paths. Only exit 1 with "No such file or directory" or "Not a directory"
proves a path absent (``readlink -v`` also says "Invalid argument": not a symlink); "Permission
denied" and anything else leave it unknown (plain ``readlink`` fails silently, hence ``-v``). The
target of every local resource is ``local``.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import upm_localfs as localfs
from events.secrets import RESOLVED_AT_RUN_TIME, references
from providers.base import (
    Batch,
    CliPin,
    FieldSpec,
    Requirement,
    ResourceType,
    Supplement,
    Vars,
    delimited,
    octal_mode,
)
from providers.readback import Absence

PROVIDER = "local"
PIN = CliPin(
    name="coreutils",
    binaries=("readlink", "sha256sum", "stat"),
    version="9.1",
    version_argv=("stat", "--version"),
    version_pattern=r"\((?:GNU )?coreutils\) (\S+)",
)
HELPER = CliPin(
    name=localfs.NAME,
    binaries=(localfs.NAME,),
    version=localfs.VERSION,
    version_argv=(localfs.NAME, "--version"),
    version_pattern=localfs.NAME + r" (\S+)",
)
"""The local provider's writer (:mod:`upm_localfs`): every create, update and delete runs it."""
_FS = localfs.NAME
_INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200d\u202a-\u202e\u2066-\u2069\ufeff]")


def character_problem(text: str) -> str | None:
    """The first control, bidi or zero-width character of ``text`` (and DEL, tab), named as U+XXXX
    with its position (1 = the first character), or ``None``."""
    found = _INVISIBLE.search(text)
    if found is None:
        return None
    char = found.group()
    name = unicodedata.name(char, "a control character")
    return (f"it contains U+{ord(char):04X} ({name}) at position {found.start() + 1}: control, bidi and "
            "zero-width characters (and DEL, tab) can make a path look like another; type it plainly")


def path_problem(path: Any) -> str | None:
    """Why ``path`` is not a plain absolute path (pure): look-alike characters, relative, ``.`` or
    ``..`` or empty parts, a trailing ``/``; ``None`` when it is one."""
    text = str(path)
    invisible = character_problem(text)
    if invisible is not None:
        return invisible
    if not text.startswith("/"):
        return "use an absolute path (starting with /)"
    if any(part in {".", ".."} for part in text.split("/")) or "//" in text:
        return "no '.', '..' or empty (//) parts"
    if len(text) > 1 and text.endswith("/"):
        return "drop the trailing /"
    return None


def _derive(v: Vars) -> dict[str, Any]:
    content = v.get("content")
    out: dict[str, Any] = {"parent": posixpath.dirname(str(v.get("path", "/")))}
    return out if content is None else out | _content_state(str(content))


def _content_state(content: str) -> dict[str, Any]:
    """The size and sha256 of the bytes a step writes (stdin is fed as UTF-8); none for an empty
    file, whose size 0 already says it all. Content that references a secret is known only once
    the executor resolved it: both are then :data:`RESOLVED_AT_RUN_TIME` in the plan."""
    if references(content):
        return {"size": RESOLVED_AT_RUN_TIME, "sha256": RESOLVED_AT_RUN_TIME}
    data = content.encode()
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()} if data else {"size": 0}


def _kind(text: str) -> str:
    return "regular file" if text == "regular empty file" else text


_PATH = FieldSpec(name="path", required=True, check=path_problem, doc="an absolute path")
_OWNER = FieldSpec(
    name="owner",
    pattern=r"[a-z_][a-z0-9_.-]{0,31}",
    rule="a user name: lowercase letters, digits, _ . -",
    nl_keys=("owned by", "owner"),
    doc="the owning user",
)
_MODE_PATTERN = r"[0-7]{3,4}"
_MODE_RULE = "three or four octal digits, e.g. 0750"


def _mode(default: str) -> FieldSpec:
    return FieldSpec(
        name="mode",
        default=default,
        pattern=_MODE_PATTERN,
        rule=_MODE_RULE,
        convert=octal_mode,
        nl_keys=("mode", "permissions"),
        doc="octal permissions",
    )


def _stat_batch(fmt: str, names: Sequence[str], convert: Mapping[str, Callable[[str], Any]]) -> Batch:
    """One ``stat`` over many paths: each line is ``FMT:%n`` (the path last, so it may hold ``:``).

    A path missing from the output is left unknown (read back on its own): ``stat`` names what it
    could not read only on stderr.
    """

    def parse(rc: int, stdout: str, idents: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        wanted = set(idents)
        found: dict[str, dict[str, Any] | None] = {}
        for line in stdout.splitlines():
            parts = line.split(":", len(names))
            if len(parts) == len(names) + 1 and parts[-1] in wanted:
                found[parts[-1]] = {n: convert[n](v) if n in convert else v for n, v in zip(names, parts, strict=False)}
        return found

    return Batch(
        group=lambda ident, target: "local",
        command=lambda group, idents: ("stat", "-c", f"{fmt}:%n", "--", *idents),
        parse=parse,
        absent=_stat_absent,
    )


_STAT_GONE = re.compile(r"(?:\S*/)?stat: cannot statx? '([^'\\]*)': (No such file or directory|Not a directory)")


def _stat_absent(stderr: str, idents: Sequence[str]) -> dict[str, str]:
    """The paths ``stat`` (in the step's C locale) said are not there, with its words, as a read-back
    of each alone would prove (:data:`_MISSING`). A name GNU quotes another way (it holds a quote, a
    backslash or a control character) is not recognised: it stays unknown and is read back alone."""
    gone = {m[1]: m[2] for m in map(_STAT_GONE.fullmatch, stderr.splitlines()) if m is not None}
    return {ident: gone[ident] for ident in idents if ident in gone}


_SHA256_LINE = re.compile(r"([0-9a-f]{64}) [ *](.*)")


def _digest_batch() -> Batch:
    """One ``sha256sum`` over many paths: each line is ``HEX  PATH``. A path it could not read (gone,
    a directory) is named only on stderr, so it is left out: unknown, never a match."""

    def parse(rc: int, stdout: str, idents: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        wanted = set(idents)
        lines = (_SHA256_LINE.fullmatch(line) for line in stdout.split("\n"))
        return {m[2]: {"sha256": m[1]} for m in lines if m is not None and m[2] in wanted}

    return Batch(
        group=lambda ident, target: "local",
        command=lambda group, idents: ("sha256sum", "--", *idents),
        parse=parse,
    )


_GONE = ("No such file or directory", "Not a directory")
_MISSING = Absence(_GONE, rcs=frozenset({1}))
_NOT_A_LINK = Absence((*_GONE, "Invalid argument"), rcs=frozenset({1}))
_CONTENT = Supplement(read=_digest_batch(), applies=lambda observed: observed.get("kind") == "regular file")
_PARENT = Requirement(type="local_directory", match={"path": "parent"}, skip=lambda v: v.get("parent") == "/")
_STAT = ("stat", "-c", "%F:%a:%U", "{path}")
_CONVERT: dict[str, Callable[[str], Any]] = {"kind": _kind, "mode": octal_mode}
_SIZED: dict[str, Callable[[str], Any]] = {"kind": _kind, "size": int}

DIRECTORY = ResourceType(
    name="local_directory",
    provider=PROVIDER,
    cli=PIN.name,
    ident="{path}",
    nouns=("directory", "dir", "folder"),
    fields=(_PATH, _mode("0755"), _OWNER),
    summary=("mode",),
    state=("mode",),
    constants={"kind": "directory"},
    create=(_FS, "mkdir", "-m", "{mode}", "{path}"),
    delete=(_FS, "rmdir", "{path}"),
    readback=_STAT,
    parse=delimited(("kind", "mode", "owner"), convert=_CONVERT),
    absent=_MISSING,
    batch=_stat_batch("%F:%a:%U", ("kind", "mode", "owner"), _CONVERT),
    derive=_derive,
    requires=(_PARENT,),
    timeout_s=10.0,
    doc="a directory; rollback of a create is rmdir (fails, safely, if something was put inside)",
)

FILE = ResourceType(
    name="local_file",
    provider=PROVIDER,
    cli=PIN.name,
    ident="{path}",
    nouns=("file",),
    fields=(
        _PATH,
        _mode("0644"),
        FieldSpec(
            name="content",
            default="",
            free_text=True,
            nl_keys=("containing", "content", "with content"),
            doc="the text (fed on stdin, never in argv)",
        ),
        _OWNER,
    ),
    summary=("mode",),
    state=("mode", "size", "sha256"),
    constants={"kind": "regular file"},
    create=(_FS, "write", "-m", "{mode}", "{path}"),
    delete=(_FS, "rm", "-f", "{path}"),
    readback=("stat", "-c", "%F:%a:%U:%s", "{path}"),
    parse=delimited(("kind", "mode", "owner", "size"), convert={**_CONVERT, **_SIZED}),
    absent=_MISSING,
    batch=_stat_batch("%F:%a:%U:%s", ("kind", "mode", "owner", "size"), {**_CONVERT, **_SIZED}),
    supplement=_CONTENT,
    stdin_field="content",
    guarded=False,
    restorable=False,
    derive=_derive,
    requires=(_PARENT,),
    timeout_s=10.0,
    doc="a regular file written from the step's stdin",
)

SYMLINK = ResourceType(
    name="local_symlink",
    provider=PROVIDER,
    cli=PIN.name,
    ident="{path}",
    nouns=("symlink", "symbolic link", "link"),
    fields=(
        _PATH,
        FieldSpec(
            name="target",
            required=True,
            check=path_problem,
            nl_keys=("pointing to", "to", "->", "target"),
            doc="the path the link points to",
        ),
    ),
    summary=("target",),
    state=("target",),
    create=(_FS, "ln", "-s", "{target}", "{path}"),
    update=(_FS, "ln", "-sfn", "{target}", "{path}"),
    delete=(_FS, "rm", "-f", "{path}"),
    readback=("readlink", "-v", "{path}"),
    parse=delimited(("target",)),
    absent=_NOT_A_LINK,
    derive=_derive,
    requires=(_PARENT,),
    timeout_s=10.0,
    doc="a symbolic link",
)

MODE = ResourceType(
    name="local_mode",
    provider=PROVIDER,
    cli=PIN.name,
    ident="{path}",
    state=("mode",),
    create=(_FS, "chmod", "{mode}", "{path}"),
    readback=("stat", "-c", "%a", "{path}"),
    parse=delimited(("mode",), convert={"mode": octal_mode}),
    absent=_MISSING,
    batch=_stat_batch("%a", ("mode",), {"mode": octal_mode}),
    facet_of=("local_directory", "local_file"),
    facet_field="mode",
    timeout_s=10.0,
    doc="the permission bits of a directory or file",
)

OWNER = ResourceType(
    name="local_owner",
    provider=PROVIDER,
    cli=PIN.name,
    ident="{path}",
    state=("owner",),
    create=(_FS, "chown", "{owner}", "{path}"),
    readback=("stat", "-c", "%U", "{path}"),
    parse=delimited(("owner",)),
    absent=_MISSING,
    batch=_stat_batch("%U", ("owner",), {}),
    facet_of=("local_directory", "local_file"),
    facet_field="owner",
    on_create=True,
    timeout_s=10.0,
    doc="the owning user of a directory or file",
)

CONTENT = ResourceType(
    name="local_file_content",
    provider=PROVIDER,
    cli=PIN.name,
    ident="{path}",
    state=("size", "sha256"),
    create=(_FS, "write", "{path}"),
    readback=("stat", "-c", "%F:%s", "{path}"),
    parse=delimited(("kind", "size"), convert=_SIZED),
    absent=_MISSING,
    batch=_stat_batch("%F:%s", ("kind", "size"), _SIZED),
    supplement=_CONTENT,
    stdin_field="content",
    guarded=False,
    derive=_derive,
    facet_of=("local_file",),
    facet_field="content",
    timeout_s=10.0,
    doc="the content of a file (rewritten whole from stdin)",
)

TYPES = (DIRECTORY, FILE, SYMLINK, MODE, OWNER, CONTENT)
