"""The shared machinery every provider module uses to describe its resource types.

A :class:`ResourceType` is data: a schema (:class:`FieldSpec`), natural-language nouns, its
dependencies (:class:`Requirement`, explicit or implied), and argv **templates** for create /
update / delete / read-back / health / existence check, the inverse of an update, a read-back
parser, a cost figure and the pinned CLI it runs.

A template is a tuple of tokens. A ``str`` token is one argv word in which ``{var}`` is replaced by
the variable's text; the token ``{*var}`` splices a list variable as several words; a ``tuple``
token is an optional group, emitted only when every variable it names is set. A template whose
mandatory variables are not all set renders to ``None`` (e.g. an undo that needs a prior value).

Facets are small types that own one field of a parent type (S3 versioning, a file's mode...):
the planner emits a facet step when a create sets the field (``on_create``) or an update names it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import msgspec

from events.plan import Command
from providers.errors import InvalidValue, MissingField, UnknownField
from providers.readback import NEVER, Absence, Absent, Observed, Present, Unknown, unknown

Token = str | tuple[str, ...]
Template = tuple[Token, ...]
Vars = Mapping[str, Any]
Parser = Callable[[str, str], "dict[str, Any] | None"]
"""``(stdout, ident)`` of a read-back that succeeded → the observed fields; ``None`` when the answer
shows the resource absent (no row); raises ``ValueError`` (or ``TypeError``…) on output it cannot
read, which makes the read-back unknown."""
Kind = Literal["str", "int", "bool", "map", "choice"]

_FIELD_NAMES: dict[str, tuple[str, ...]] = {}
_VAR = re.compile(r"\{(\*?)(\w+)\}")
_SAFE = re.compile(r"[\w@%+=:,./-]+")
_DOUBLE_QUOTE_UNSAFE = re.compile(r'["\\$`]')
_META = re.compile(r";|&&|\|\||\\|\$\(|`|<|>|\n")


class Mismatch(msgspec.Struct, frozen=True, kw_only=True):
    """One field whose observed value differs from the desired one."""

    field: str
    desired: Any
    observed: Any


@dataclass(frozen=True, slots=True)
class CliPin:
    """A pinned CLI: the binaries it provides, its version and how to read the version back."""

    name: str
    binaries: tuple[str, ...]
    version: str
    version_argv: tuple[str, ...]
    version_pattern: str


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of a resource type's schema.

    ``pattern``/``rule`` validate strings (``rule`` says the naming rule in words);
    ``free_text`` fields (file content, fed on stdin) may hold anything; every other value is
    refused if it holds a shell metacharacter the execution guard-rails would reject.
    ``nl_keys`` are the words that introduce the value in a request ("mode 0750"),
    ``nl_flags`` words that set it on their own ("versioning" → True), ``nl_suffix`` words that
    follow a number ("3 replicas").
    """

    name: str
    kind: Kind = "str"
    required: bool = False
    default: Any = None
    default_from: Callable[[Vars], Any] | None = None
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    rule: str = ""
    minimum: int | None = None
    check: Callable[[Any], str | None] | None = None
    convert: Callable[[str], str] | None = None
    free_text: bool = False
    nl_keys: tuple[str, ...] = ()
    nl_flags: Mapping[str, Any] = field(default_factory=dict)
    nl_suffix: tuple[str, ...] = ()
    doc: str = ""


@dataclass(frozen=True, slots=True)
class Requirement:
    """This type needs a resource of ``type`` whose fields equal ``match`` (other field ← my var).

    ``implied`` requirements are added to the plan (guarded, never rolled back) when the request
    does not mention them; the others become ``resources_needed`` prerequisites. ``skip`` exempts
    resources that always exist (the ``default`` namespace, ``/``). ``satisfied_by``: other types
    whose resource of the same name in the same plan fulfils it (a login user is a role).
    """

    type: str
    match: Mapping[str, str]
    implied: bool = False
    implied_fields: Mapping[str, str] = field(default_factory=dict)
    skip: Callable[[Vars], bool] | None = None
    satisfied_by: tuple[str, ...] = ()


BatchParser = Callable[[int, str, Sequence[str]], "dict[str, dict[str, Any] | None]"]


@dataclass(frozen=True, slots=True)
class Batch:
    """How one command reads back many resources of a type (one CLI start-up, one API call).

    ``group(ident, target)`` says which resources one command can read together (a region, a
    database); ``command(group, idents)`` is that command's argv; ``parse(rc, stdout, idents)`` maps
    each ident its answer proves something about to its observed fields (``None`` = proven absent:
    the answer lists what exists and it is not there). An ident left out (or every ident, when the
    command failed) is unknown: read it back on its own, which says why. ``absent(stderr, idents)``
    (optional) maps the idents the command's error output proves absent (``stat`` names a missing
    path only there) to that proof, exactly as a read-back of each alone would.
    """

    group: Callable[[str, str], str]
    command: Callable[[str, Sequence[str]], tuple[str, ...]]
    parse: BatchParser
    absent: Callable[[str, Sequence[str]], Mapping[str, str]] | None = None


@dataclass(frozen=True, slots=True)
class Supplement:
    """A second read-back for what the type's own cannot show (a file's content digest beside its
    ``stat``): one command over one or many resources (``read``, a :class:`Batch`), run after the
    main read-back, only for resources it found and ``applies`` to (a regular file, not a FIFO a
    digest would block on). Its fields join the main read-back's; a resource it should have
    answered for and did not is unknown, never a match or drift.
    """

    read: Batch
    applies: Callable[[Mapping[str, Any]], bool]


@dataclass(frozen=True, slots=True)
class ResourceType:
    """Everything the planner, executor and verifier need to know about one kind of resource.

    - ``ident``: template of the resource's name within its target (``ResourceRef.name``);
      ``nouns``: its natural-language names; ``nl_in``: the field "in X" sets (``@target``: the
      target, e.g. an AWS region); ``summary``: fields shown in the plan's resource list.
    - ``state``/``constants``: what a read-back must show (``Step.desired``); ``parse`` turns a
      successful read-back's ``(stdout, name)`` into observed fields (``None``: the answer shows it
      absent); ``absent`` says which failures prove it absent (a not-found error code), any other
      failure leaves it unknown (:meth:`read`, :mod:`providers.readback`).
    - ``create``/``update``/``delete``/``readback``/``health``/``exists`` templates; ``undo`` is the
      inverse of an update (often needing a ``previous_*`` value); ``restorable`` says whether a
      delete can be undone by re-creating; ``guarded`` whether the read-back can prove a step done.
    - ``stdin_field``: the field fed on stdin; ``derive``: extra template variables.
    - ``requires``: dependencies; ``cluster_bound``: runs on a Kubernetes cluster (the target);
      ``fixed_target``: the only target (IAM: ``global``).
    - ``facet_of``/``facet_field``/``on_create``: this type owns one field of those parents.
    - ``monthly_cost`` (× the ``cost_unit`` field, e.g. AKS nodes), ``timeout_s``, ``cli`` (a pin).
    - ``batch``: how to read many of them back in one command (:func:`batch_readbacks`), if the
      target's API allows it; ``supplement``: a second read-back for fields the first cannot show.
    - ``renaming``: what to do instead of renaming one (``{old}``/``{new}``: the names); a resource's
      name is its identity, so no type renames in place and the planner refuses a rename with this.
    """

    name: str
    provider: str
    cli: str
    ident: str
    readback: Template
    parse: Parser
    absent: Absence = NEVER
    fields: tuple[FieldSpec, ...] = ()
    nouns: tuple[str, ...] = ()
    nl_in: str | None = None
    summary: tuple[str, ...] = ()
    state: tuple[str, ...] = ()
    constants: Mapping[str, Any] = field(default_factory=dict)
    create: Template | None = None
    update: Template | None = None
    delete: Template | None = None
    undo: Template | None = None
    health: Template | None = None
    exists: Template | None = None
    stdin_field: str | None = None
    guarded: bool = True
    restorable: bool = True
    derive: Callable[[Vars], dict[str, Any]] | None = None
    requires: tuple[Requirement, ...] = ()
    cluster_bound: bool = False
    fixed_target: str | None = None
    facet_of: tuple[str, ...] = ()
    facet_field: str = ""
    on_create: bool = False
    monthly_cost: float = 0.0
    cost_unit: str | None = None
    timeout_s: float = 60.0
    batch: Batch | None = None
    supplement: Supplement | None = None
    renaming: str = ""
    doc: str = ""

    def read(self, rc: int, stdout: str, stderr: str, ident: str, *, timed_out: bool = False) -> Observed:
        """What one read-back of ``ident`` says: present (fields, with ``exists: True``), absent
        (a successful answer showing none, or a failure this type declares proof of absence), or
        unknown (any other failure, output it cannot read)."""
        if timed_out or rc != 0:
            return self.failed(rc, stderr, timed_out=timed_out)
        try:
            fields = self.parse(stdout, ident)
        except (ValueError, TypeError, AttributeError, LookupError) as err:
            return Unknown(rc=0, kind="error", summary=f"could not parse the read-back's output ({err})")
        return Absent("the answer shows none") if fields is None else Present({"exists": True, **fields})

    def failed(self, rc: int, stderr: str, *, timed_out: bool = False) -> Absent | Unknown:
        """What a failed read-back (or existence check) of this type says: absent only when its
        stderr carries this type's proof of absence (:attr:`absent`)."""
        proof = None if timed_out else self.absent.proof(rc, stderr)
        return unknown(rc, stderr, timed_out=timed_out) if proof is None else Absent(proof)

    def spec(self, name: str) -> FieldSpec:
        """The field named ``name`` (``KeyError`` when the type has none)."""
        for spec in self.fields:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @property
    def field_names(self) -> tuple[str, ...]:
        """The names of the type's fields, in schema order."""
        names = _FIELD_NAMES.get(self.name)
        if names is None:
            names = _FIELD_NAMES[self.name] = tuple(spec.name for spec in self.fields)
        return names

    @property
    def ident_fields(self) -> tuple[str, ...]:
        """The fields that name the resource (those in ``ident``)."""
        return tuple(template_vars((self.ident,)))

    def validate(self, raw: Mapping[str, Any], *, required: Collection[str] | None = None) -> dict[str, Any]:
        """``raw`` checked and normalized, defaults filled in.

        ``required`` limits which required fields must be present (an update or delete needs only
        the naming fields); ``None`` enforces them all.
        """
        known = set(self.field_names)
        for name in sorted(raw):
            if name not in known:
                raise UnknownField(
                    self.name,
                    name,
                    f"{self.name} has no field {name!r}; its fields are: {', '.join(self.field_names)}",
                )
        values: dict[str, Any] = {}
        for spec in self.fields:
            if spec.name in raw and raw[spec.name] is not None:
                values[spec.name] = _coerce(self.name, spec, raw[spec.name])
        for spec in self.fields:
            if spec.name in values:
                continue
            if spec.required and (required is None or spec.name in required):
                raise MissingField(
                    self.name,
                    spec.name,
                    f"{self.name} needs {spec.name!r} ({spec.doc or spec.kind}); add it to the request "
                    f"or the spec" + (f", e.g. '{spec.nl_keys[0]} …'" if spec.nl_keys else ""),
                )
            if spec.default_from is not None:
                values[spec.name] = spec.default_from(values)
            elif spec.default is not None:
                values[spec.name] = spec.default
        return values

    def variables(self, values: Mapping[str, Any], target: str) -> dict[str, Any]:
        """Template variables: the fields, the target (as ``at``) and what ``derive`` adds."""
        out: dict[str, Any] = {"at": target, **values}
        if self.derive is not None:
            out.update(self.derive(out))
        return out

    def identity(self, variables: Vars) -> str:
        """The resource's name within its target (``ResourceRef.name``)."""
        argv = render((self.ident,), variables)
        if argv is None:
            raise MissingField(self.name, self.ident, f"{self.name} needs {self.ident} to be named")
        return argv[0]

    def desired(self, variables: Vars) -> dict[str, Any]:
        """The state a read-back must show after a create or update."""
        out: dict[str, Any] = {"exists": True, **self.constants}
        for name in self.state:
            value = variables.get(name)
            if value is not None:
                out[name] = value
        return out


def render(template: Sequence[Token], variables: Vars) -> tuple[str, ...] | None:
    """The argv of ``template`` (see the module docstring); ``None`` if a mandatory var is unset."""
    required, ops = _compiled(tuple(template))
    get = variables.get
    for name in required:
        if not is_set(get(name)):
            return None
    out: list[str] = []
    for kind, data, group in ops:
        if kind == _LITERAL:
            out.append(data)
        elif kind == _VALUE:
            out.append(_text(get(data)))
        elif kind == _SPLICE:
            out.extend(_text(item) for item in get(data) or ())
        elif kind == _FORMAT:
            out.append(data.format_map(_Texts(variables)))
        else:
            rendered = render(group, variables)
            if rendered is not None:
                out.extend(rendered)
    return tuple(out)


_LITERAL, _VALUE, _SPLICE, _FORMAT, _GROUP = range(5)
_Op = tuple[int, str, tuple[Token, ...]]


@lru_cache(maxsize=1024)
def _compiled(template: tuple[Token, ...]) -> tuple[tuple[str, ...], tuple[_Op, ...]]:
    """(mandatory variable names, render operations) of a template, computed once."""
    required: list[str] = []
    ops: list[_Op] = []
    for token in template:
        if isinstance(token, tuple):
            ops.append((_GROUP, "", token))
            continue
        names = [m.group(2) for m in _VAR.finditer(token)]
        required.extend(names)
        whole = _VAR.fullmatch(token)
        if not names:
            ops.append((_LITERAL, token, ()))
        elif whole is not None:
            ops.append((_SPLICE if whole.group(1) else _VALUE, whole.group(2), ()))
        elif "{" in _VAR.sub("", token) or "}" in _VAR.sub("", token) or "{*" in token:
            raise ValueError(
                f"template token {token!r}: literal braces and mid-token splices are not allowed"
            )
        else:
            ops.append((_FORMAT, token, ()))
    return tuple(dict.fromkeys(required)), tuple(ops)


class _Texts:
    """``variables`` seen through :func:`_text`, for ``str.format_map``."""

    __slots__ = ("variables",)

    def __init__(self, variables: Vars) -> None:
        self.variables = variables

    def __getitem__(self, name: str) -> str:
        return _text(self.variables[name])


def batch_readbacks(rtype: ResourceType, resources: Sequence[tuple[str, str]]) -> list[tuple[Command, tuple[str, ...]]]:
    """The batch read-backs of ``resources`` (``(ident, target)`` pairs of ``rtype``): one command
    per group, with the idents it reads (none when the type cannot batch)."""
    return [] if rtype.batch is None else grouped_readbacks(rtype.batch, resources)


def grouped_readbacks(batch: Batch, resources: Sequence[tuple[str, str]]) -> list[tuple[Command, tuple[str, ...]]]:
    """``batch``'s commands for ``resources`` (``(ident, target)`` pairs): one per group, with the
    idents it reads."""
    groups: dict[str, list[str]] = {}
    for ident, target in resources:
        groups.setdefault(batch.group(ident, target), []).append(ident)
    out = []
    for group, idents in sorted(groups.items()):
        members = tuple(dict.fromkeys(idents))
        argv = batch.command(group, members)
        out.append((Command(argv=argv, display=display(argv)), members))
    return out


def command(template: Sequence[Token] | None, variables: Vars) -> Command | None:
    """The :class:`Command` of ``template`` or ``None`` (no template, or a var missing)."""
    if template is None:
        return None
    argv = render(template, variables)
    return None if argv is None else Command(argv=argv, display=display(argv))


def display(argv: Sequence[str]) -> str:
    """``argv`` for people and the spec: POSIX words, double quotes where they suffice.

    ``shlex.split(display(argv)) == list(argv)`` always holds.
    """
    return " ".join(map(_quote, argv))


@lru_cache(maxsize=8192)
def _quote(arg: str) -> str:
    if arg and _SAFE.fullmatch(arg):
        return arg
    if not _DOUBLE_QUOTE_UNSAFE.search(arg):
        return f'"{arg}"'
    return "'" + arg.replace("'", "'\"'\"'") + "'"


def is_set(value: Any) -> bool:
    """``None``, ``False``, ``""`` and empty collections are unset; ``0`` is set."""
    return bool(value) or (value is not False and value is not None and value == 0)


def compare(desired: Mapping[str, Any], observed: Mapping[str, Any] | None) -> list[Mismatch]:
    """The fields where ``observed`` (``None`` = absent) differs from ``desired``.

    ``desired["exists"]`` (default ``True``) is compared with presence first; when the resource
    should be absent, or is absent, nothing else is compared.
    """
    want = bool(desired.get("exists", True))
    present = observed is not None
    if want != present:
        return [Mismatch(field="exists", desired=want, observed=present)]
    if observed is None:
        return []
    return [
        Mismatch(field=name, desired=value, observed=observed.get(name))
        for name, value in sorted(desired.items())
        if name != "exists" and observed.get(name) != value
    ]


def rc_exists(stdout: str, ident: str) -> dict[str, Any] | None:
    """Parser for read-backs whose success alone shows the resource exists (whether a failure
    proves it absent is the type's :class:`Absence`)."""
    return {}


def json_fields(
    paths: Mapping[str, tuple[str | int, ...]],
    convert: Mapping[str, Callable[[Any], Any]] | None = None,
) -> Parser:
    """A parser that reads ``field ← value at path`` from a JSON read-back (invalid JSON: unknown)."""

    def parse(stdout: str, ident: str) -> dict[str, Any] | None:
        doc = json.loads(stdout) if stdout.strip() else {}
        out: dict[str, Any] = {}
        for name, path in paths.items():
            value = _at(doc, path)
            if convert is not None and name in convert:
                value = convert[name](value)
            out[name] = value
        return out

    return parse


def delimited(
    names: Sequence[str], sep: str = ":", convert: Mapping[str, Callable[[str], Any]] | None = None
) -> Parser:
    """A parser for one ``a<sep>b<sep>c`` line (no output: the answer shows none, e.g. no row)."""

    def parse(stdout: str, ident: str) -> dict[str, Any] | None:
        line = stdout.strip().splitlines()[0] if stdout.strip() else ""
        if not line:
            return None
        parts = line.split(sep, len(names) - 1)
        out: dict[str, Any] = {}
        for name, part in zip(names, parts, strict=False):
            out[name] = convert[name](part) if convert and name in convert else part
        return out

    return parse


def octal_mode(value: Any) -> str:
    """A file mode as four octal digits (``"755"`` → ``"0755"``)."""
    return format(int(str(value), 8), "04o")


def _at(doc: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        if isinstance(part, int):
            if not isinstance(doc, list) or len(doc) <= part:
                return None
        elif not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    return doc


def template_vars(tokens: Sequence[Token]) -> list[str]:
    """The variable names a template (or some of its tokens) uses, in order."""
    out: list[str] = []
    for token in tokens:
        if isinstance(token, tuple):
            out.extend(template_vars(token))
        else:
            out.extend(m.group(2) for m in _VAR.finditer(token))
    return out


def _text(value: Any) -> str:
    if type(value) is str:
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


_TRUE = {"true", "yes", "on", "1", "enabled"}
_FALSE = {"false", "no", "off", "0", "disabled"}


def _coerce(type_name: str, spec: FieldSpec, value: Any) -> Any:
    where = f"{type_name}.{spec.name}"
    if spec.kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).lower()
        if text in _TRUE | _FALSE:
            return text in _TRUE
        raise InvalidValue(type_name, spec.name, f"{where} must be true or false, not {value!r}")
    if spec.kind == "int":
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise InvalidValue(
                type_name, spec.name, f"{where} must be a whole number, not {value!r}"
            ) from None
        if isinstance(value, bool) or (spec.minimum is not None and number < spec.minimum):
            raise InvalidValue(
                type_name, spec.name, f"{where} must be a whole number ≥ {spec.minimum}, not {value!r}"
            )
        return number
    if spec.kind == "map":
        if not isinstance(value, Mapping):
            raise InvalidValue(
                type_name, spec.name, f"{where} must be a map of key=value pairs, not {value!r}"
            )
        items = {str(k): str(v) for k, v in value.items()}
        for key, item in items.items():
            if not _SAFE.fullmatch(key) or _META.search(item) or not item:
                raise InvalidValue(
                    type_name,
                    spec.name,
                    f"{where} has an invalid pair {key}={item!r}: keys are words, values are non-empty and "
                    "hold no shell metacharacters (; && || \\ $( ` < > newline)",
                )
        return dict(sorted(items.items()))
    text = str(value)
    meta = None if spec.free_text else _META.search(text)
    if meta is not None:
        raise InvalidValue(
            type_name,
            spec.name,
            f"{where} {text!r} contains {meta.group()!r}, which the execution guard-rails reject in any "
            "command (no shell metacharacters); remove it",
        )
    if spec.kind == "choice" and text not in spec.choices:
        raise InvalidValue(
            type_name, spec.name, f"{where} must be one of {', '.join(spec.choices)}, not {text!r}"
        )
    if spec.pattern is not None and not re.fullmatch(spec.pattern, text):
        raise InvalidValue(
            type_name, spec.name, f"{where} {text!r} is not valid: {spec.rule or spec.pattern}"
        )
    if spec.check is not None:
        problem = spec.check(text)
        if problem is not None:
            raise InvalidValue(type_name, spec.name, f"{where} {text!r} is not valid: {problem}")
    return spec.convert(text) if spec.convert is not None else text
