"""Policy packs: folders of Rego files evaluated with regopy (rego-cpp), cached per folder.

A pack is every ``*.rego`` file under a folder (``*_test.rego`` excluded), all in package
``upm.preflight``. Pre-flight queries ``data.upm.preflight`` and reads four rule sets:

``deny``          ``{"rule", "message", "resource"?}``  — a violation; any one refuses the plan
``approval``      ``{"rule", "groups": [..], "count", "message"?}`` — approvals the plan needs
``auto_approve``  ``{"rule", "message"}`` — the low-risk lane: auto-approve when nothing needs approval
``window``        ``{"rule", "message", "outside"?: "wait"|"refuse"}`` — run inside the maintenance window

A broken file is refused at load with its file and line; a pack is smoke-evaluated at load on
sample inputs, so a call to an unknown function or an answer in the wrong shape is refused
before any change sees it. The interpreter of each pack is built once and reused until a file
changes (size or mtime); evaluation is synchronous and takes no I/O.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec
from regopy import Bundle, Interpreter, LogLevel, RegoError
from regopy.rego_shared import (
    rego_bundle_query,
    rego_free_output,
    rego_output_ok,
    rego_output_string,
)

from events.model import Violation
from services.preflight.errors import PolicyEvaluationError, PolicyLoadError

PACKAGE = "upm.preflight"
QUERY = "decision := data.upm.preflight"
RULE_SETS = ("deny", "approval", "auto_approve", "window")
_PACKAGE_RE = re.compile(r"^\s*package\s+([A-Za-z0-9_.]+)", re.MULTILINE)


class ApprovalRule(msgspec.Struct, frozen=True, kw_only=True):
    """``count`` distinct approvers from any of ``groups`` (empty: any approver group)."""

    rule: str
    groups: tuple[str, ...] = ()
    count: int = 1
    message: str = ""


class LaneRule(msgspec.Struct, frozen=True, kw_only=True):
    rule: str
    message: str = ""


class WindowRule(msgspec.Struct, frozen=True, kw_only=True):
    rule: str
    message: str = ""
    outside: Literal["wait", "refuse"] = "wait"


class PackOutput(msgspec.Struct, frozen=True, kw_only=True):
    """What one pack answered (other rules of the package are ignored)."""

    deny: tuple[Violation, ...] = ()
    approval: tuple[ApprovalRule, ...] = ()
    auto_approve: tuple[LaneRule, ...] = ()
    window: tuple[WindowRule, ...] = ()


@dataclass
class PolicyPack:
    """A loaded pack: its name, folder, content hash, files, its interpreter and the query compiled
    once into a bundle (re-evaluated on each input)."""

    name: str
    folder: Path
    hash: str
    files: tuple[tuple[str, str], ...]
    interpreter: Interpreter
    bundle: Bundle
    signature: tuple[tuple[str, int, int], ...]

    def evaluate(self, document: dict[str, Any]) -> tuple[PackOutput, dict[str, Any]]:
        """The pack's answer for the input ``document`` and the raw output (the four rule sets)."""
        try:
            self.interpreter.set_input(document)
        except RegoError as exc:
            raise PolicyEvaluationError(f"policy pack {self.name}: the input was refused: {_message(str(exc))}") from exc
        raw = _query(self.interpreter, self.bundle)
        doc = raw if isinstance(raw, dict) else {}
        output = {k: doc.get(k, []) for k in RULE_SETS}
        try:
            return msgspec.convert(output, PackOutput), output
        except msgspec.ValidationError as exc:
            raise PolicyEvaluationError(
                f"policy pack {self.name} ({self.folder}) answered in the wrong shape: {exc}. "
                "deny entries need rule and message; approval entries rule, groups and count"
            ) from exc


_CACHE: dict[Path, PolicyPack] = {}


def load_pack(folder: Path, *, samples: Sequence[dict[str, Any]] = ()) -> PolicyPack:
    """The pack in ``folder``: cached while no file changed; else loaded, checked and cached."""
    folder = folder.resolve()
    paths = _rego_files(folder)
    signature = tuple((p.relative_to(folder).as_posix(), st.st_mtime_ns, st.st_size) for p in paths
                      for st in (p.stat(),))
    cached = _CACHE.get(folder)
    if cached is not None and cached.signature == signature:
        return cached
    files = tuple((p.relative_to(folder).as_posix(), p.read_text()) for p in paths)
    pack = build_pack(folder.name, folder, files, signature=signature, samples=samples)
    _CACHE[folder] = pack
    return pack


def build_pack(
    name: str,
    folder: Path,
    files: Sequence[tuple[str, str]],
    *,
    signature: tuple[tuple[str, int, int], ...] = (),
    samples: Sequence[dict[str, Any]] = (),
) -> PolicyPack:
    """Parse and check ``files`` (relative name, text) as one pack; smoke-evaluate ``samples``."""
    interp = Interpreter()
    interp.log_level = LogLevel.NONE
    for rel, text in files:
        _check_package(folder / rel, text)
        try:
            interp.add_module(rel, text)
        except RegoError as exc:
            raise _located(str(exc), folder, files) from exc
    try:
        bundle = interp.build(QUERY, [])
    except RegoError as exc:
        raise _located(str(exc), folder, files) from exc
    digest = hashlib.sha256()
    for rel, text in sorted(files):
        digest.update(f"{rel}\x00{len(text.encode())}\x00".encode() + text.encode())
    pack = PolicyPack(
        name=name, folder=folder, hash=f"sha256:{digest.hexdigest()}", files=tuple(files), interpreter=interp,
        bundle=bundle, signature=signature,
    )
    for sample in samples or ({},):
        try:
            pack.evaluate(sample)
        except PolicyEvaluationError as exc:
            raise _located(str(exc), folder, files) from exc
    return pack


def _rego_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise PolicyLoadError(
            f"policy folder {folder} does not exist; create it with .rego files or fix `policies` in the config"
        )
    paths = sorted(p for p in folder.rglob("*.rego") if not p.name.endswith("_test.rego"))
    if not paths:
        raise PolicyLoadError(f"policy folder {folder} holds no .rego file; add one (package {PACKAGE})")
    return paths


def _check_package(path: Path, text: str) -> None:
    match = _PACKAGE_RE.search(text)
    if match is None:
        raise PolicyLoadError(f"no package declaration; start the file with `package {PACKAGE}`", file=str(path),
                              line=1)
    if match.group(1) != PACKAGE:
        line = text[: match.start(1)].count("\n") + 1
        raise PolicyLoadError(
            f"package {match.group(1)} is not read by pre-flight; declare `package {PACKAGE}`",
            file=str(path), line=line,
        )


def _query(interp: Interpreter, bundle: Bundle) -> Any:
    """``data.upm.preflight`` for the current input (``None`` when undefined)."""
    try:
        handle = rego_bundle_query(interp._impl, bundle._impl)
    except RegoError as exc:
        raise PolicyEvaluationError(f"evaluation failed: {_message(str(exc))}") from exc
    try:
        ok, text = rego_output_ok(handle), rego_output_string(handle)
    finally:
        rego_free_output(handle)
    if not ok or text.startswith("(error") or text == "<error>":
        raise PolicyEvaluationError(f"evaluation failed: {_message(text)}")
    if text == "undefined":
        return None
    try:
        return json.loads(text).get("bindings", {}).get("decision")
    except (ValueError, AttributeError) as exc:
        raise PolicyEvaluationError(f"evaluation returned something that is not JSON: {text[:200]}") from exc


def _message(error: str) -> str:
    """The human message inside rego-cpp's error tree (``(errormsg N:text)``)."""
    match = re.search(r"\(errormsg (\d+):", error)
    if match is None:
        return error.strip()
    start = match.end()
    return error[start : start + int(match.group(1))]


def _located(error: str, folder: Path, files: Iterable[tuple[str, str]]) -> PolicyLoadError:
    """A load error naming the file and line the rego-cpp error tree points at (or can be found)."""
    texts = dict(files)
    message = _message(error)
    match = re.search(r"\(error (\d+):", error)
    if match is not None:
        start = match.end()
        name = error[start : start + int(match.group(1))]
        place = re.match(r"\|(\d+)\|", error[start + int(match.group(1)) :])
        if name in texts and place is not None:
            line = texts[name][: int(place.group(1))].count("\n") + 1
            return PolicyLoadError(f"{message}; fix the Rego there", file=str(folder / name), line=line)
    found = re.search(r"Function not found: ([\w.]+)", message)
    if found is not None:
        call = re.compile(rf"(?<![\w.]){re.escape(found.group(1))}\s*\(")
        for name, text in texts.items():
            hit = call.search(text)
            if hit is not None:
                line = text[: hit.start()].count("\n") + 1
                return PolicyLoadError(f"{message}; use a Rego built-in or define it", file=str(folder / name),
                                       line=line)
    return PolicyLoadError(f"pack cannot be evaluated: {message}", file=str(folder))
