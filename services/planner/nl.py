"""The natural-language input form: a request sentence → an :class:`Intent`.

Grammar (case-insensitive; a trailing period is ignored)::

    request  := clause ((',' | 'and') clause)*   [targets] [variant]
    clause   := [verb] [a|an|the] NOUN NAME modifier*
              | 'grant' ['role'] ROLE PRIV 'access' ('to'|'on') 'database' DB ['schema' S]
              | 'revoke' ['role'] ROLE PRIV 'access' ('to'|'on'|'from') 'database' DB ['schema' S]
              | ('attach'|'detach') ['policy'] ARN ('to'|'from') 'role' ROLE
              | ('enable'|'disable') FLAG ('on'|'for') NOUN NAME
    verb     := create|add|make|provision|deploy (create) | delete|remove|drop|destroy (delete)
              | update|change|modify|set|scale|resize (update)     -- a clause without one inherits
    modifier := 'in' VALUE                (location / region, by type)
              | KEY VALUE                 ("mode 0750", "image nginx:1.27", "owned by alice", "tagged team=alpha")
              | FLAG | 'without' FLAG     ("with versioning and encryption", "without login")
              | NUMBER SUFFIX             ("3 replicas", "4 nodes")
    targets  := ('in'|'on'|'across'|'to') ('clusters'|'regions'|'servers'|'targets') NAME ((','|'and') NAME)*
    variant  := ['as a'|'using'|'with a'|'in'] ('canary'|'blue-green'|'waves') ['rollout'|'deployment'|'release']

A new clause starts after ``,`` or ``and`` only where a verb or a resource noun follows, so
"with versioning and encryption, tagged team=alpha" stays one clause. Words that fit nowhere are
an error naming them and the nearest phrasing that compiles: the parser never guesses.

Before the grammar, :mod:`services.planner.nl_front` rewrites requests as people type them
(filler, phrasal verbs, passives, lists); a misspelt verb, resource word or setting is read as the
catalog's unique nearest word. Every such reading is a note in ``Intent.notes`` (the plan's impact
notes).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec

from events.plan import Action
from providers import CATALOG, ResourceType
from services.planner.errors import (
    AmbiguousPhrase,
    InvalidFieldValue,
    MissingRequiredField,
    PlanError,
    UnknownResourceType,
    UnrecognisedPhrase,
)
from services.planner.model import Intent, ResourceIntent
from services.planner.nl_front import closest, nearest, normalise
from services.planner.nodes import rename_refusal

VERBS: dict[str, Action] = {
    **dict.fromkeys(("create", "add", "make", "provision", "deploy", "new"), "create"),
    **dict.fromkeys(("delete", "remove", "drop", "destroy"), "delete"),
    **dict.fromkeys(("update", "change", "modify", "set", "scale", "resize"), "update"),
}
SPECIAL = ("grant", "revoke", "attach", "detach", "enable", "disable", "open", "close", "rename")
_ARTICLES = {"a", "an", "the", "new"}
_FILLERS = {"with", "and", ",", "a", "an", "the", "to", "of", "having", "that", "is", "on", "=", "at", "as"}
_TOKEN = re.compile(r"'[^']*'|\"[^\"]*\"|,|[^\s,]+")
_TARGET_KINDS = {"cluster": "k8s", "context": "k8s", "region": "aws", "server": "postgres", "target": ""}
_VARIANT = re.compile(
    r"[,\s]*\b(?:(?:as an?|using an?|using|with an?|via|in|by)\s+)?(canary|blue[-/ ]?green|waves)\b"
    r"(?:\s+(?:rollout|deployment|release|strategy|variant))?",
    re.IGNORECASE,
)
_PRIVILEGES = {
    **dict.fromkeys(("read", "read-only", "readonly", "select"), "read"),
    **dict.fromkeys(("write", "read-write", "readwrite"), "write"),
    **dict.fromkeys(("all", "full", "admin"), "all"),
}
_GRANT = re.compile(
    r"^(?P<verb>grant|revoke)\s+(?:(?:postgres|database|pg)\s+)?(?:role\s+)?(?P<role>\S+)\s+(?P<priv>\S+)\s+"
    r"(?:access|privileges?)\s+(?:to|on|from|in)\s+(?:the\s+)?(?:database|db)\s+(?P<db>\S+)"
    r"(?:\s+(?:in\s+)?schema\s+(?P<schema>\S+))?$",
    re.IGNORECASE,
)
_GRANT_TO = re.compile(
    r"^(?P<verb>grant|revoke)\s+(?P<priv>\S+)\s+(?:access|privileges?)\s+(?:to|on|in)\s+(?:the\s+)?(?:database|db)\s+"
    r"(?P<db>\S+)(?:\s+(?:in\s+)?schema\s+(?P<schema>\S+))?\s+(?:to|from)\s+(?:role\s+)?(?P<role>\S+)$",
    re.IGNORECASE,
)
_GRANT_ON = re.compile(
    r"^(?P<verb>grant|revoke)\s+(?:(?:postgres|database|pg)\s+)?(?:role\s+|user\s+)?(?P<role>\S+)\s+(?P<priv>\S+)\s+"
    r"(?:(?:access|privileges?)\s+)?(?:to|on|from|in)\s+(?:the\s+)?(?P<kind>table|schema)\s+"
    r"(?:(?P<schema>[a-z_][a-z0-9_]*)\.)?(?P<object>\S+)\s+(?:in|on|of)\s+(?:the\s+)?(?:database|db)\s+(?P<db>\S+)$",
    re.IGNORECASE,
)
_SCHEMA_PRIVILEGES = {"usage": "usage", "use": "usage", "create": "create", "all": "all", "full": "all"}
_ATTACH = re.compile(
    r"^(?P<verb>attach|detach)\s+(?:managed\s+)?(?:policy\s+)?(?P<arn>\S+)\s+(?:to|from)\s+(?:iam\s+)?role\s+(?P<role>\S+)$",
    re.IGNORECASE,
)
_PORT = re.compile(
    r"^(?P<verb>open|close)\s+(?:(?P<proto>tcp|udp)\s+)?port\s+(?P<port>\d+)(?:/(?P<proto2>tcp|udp))?\s+"
    r"(?:on|in|of|for|to)\s+(?:the\s+)?(?:(?:ec2\s+)?security\s+group\s+|sg\s+)?(?P<group>\S+)"
    r"(?:\s+(?:from|to)\s+(?P<cidr>\S+))?(?:\s+in\s+(?P<region>\S+))?$",
    re.IGNORECASE,
)
_RENAME = re.compile(r"^rename\s+(?P<rest>.+?)\s+(?:to|as|into)\s+(?P<new>\S+)$", re.IGNORECASE)
_TOGGLE = re.compile(
    r"^(?P<verb>enable|disable)\s+(?P<flag>[\w-]+)\s+(?:on|for)\s+(?P<rest>.+)$", re.IGNORECASE
)
_EXAMPLES = (
    "'Create AKS cluster aks-demo in eastus and namespace team-alpha', "
    "'Create S3 bucket logs-acme with versioning', 'Grant role analyst read access to database orders', "
    "'Delete namespace team-alpha', 'Create directory /srv/app with mode 0750'"
)


def _nouns() -> dict[tuple[str, ...], tuple[str, ...]]:
    out: dict[tuple[str, ...], list[str]] = {}
    for rtype in CATALOG.values():
        for noun in rtype.nouns:
            out.setdefault(tuple(noun.split()), []).append(rtype.name)
    return {k: tuple(sorted(v)) for k, v in out.items()}


NOUNS = _nouns()
_NOUN_WORDS = tuple(sorted(" ".join(k) for k in NOUNS))
_VERB_WORDS = tuple(sorted({*VERBS, *SPECIAL}))
_VAGUE = {("cluster",), ("kubernetes", "cluster"), ("k8s", "cluster")}
_LONGEST = max(len(k) for k in NOUNS)
_STOP = "|".join(sorted({*VERBS, *SPECIAL, *(k[0] for k in NOUNS)}))
_TARGETS = re.compile(
    r"\b(?:in|on|across|to)\s+(?:the\s+)?(clusters?|contexts?|regions?|servers?|targets?)\s+"
    rf"([\w.-]+(?:\s*(?:,\s*and|,|and)\s*(?!(?:{_STOP})(?:\s|$))[\w.-]+)*)",
    re.IGNORECASE,
)


def parse_request(request: str) -> Intent:
    """The :class:`Intent` a natural-language request describes (see the module docstring)."""
    text, front = normalise(request, _NOUN_WORDS, _VERB_WORDS)
    notes = list(front)
    if not text:
        raise UnrecognisedPhrase(f"the request is empty; say what to change, e.g. {_EXAMPLES}")
    variant, text = _variant(text)
    targets, kind, text = _targets(text)
    intents: list[ResourceIntent] = []
    action: Action | None = None
    for clause in _clauses(_tokens(text)):
        item, action = _clause(clause, action, notes)
        intents.append(item)
    if targets:
        intents = _apply_targets(intents, targets, kind)
    return Intent(resources=tuple(intents), targets=targets, variant=variant, notes=tuple(notes))


def suggest(word: str, choices: Sequence[str]) -> str:
    """Up to three close matches of ``word`` among ``choices``, quoted, or ``""``."""
    return ", ".join(repr(c) for c in nearest(word, choices))


def _variant(text: str) -> tuple[str | None, str]:
    found = list(_VARIANT.finditer(text))
    if len(found) > 1:
        raise UnrecognisedPhrase(f"the request names {len(found)} rollout variants; keep one")
    if not found:
        return None, text
    word = found[0].group(1).lower()
    variant = "blue-green" if word.startswith("blue") else word
    return variant, (text[: found[0].start()] + text[found[0].end() :]).strip()


def _targets(text: str) -> tuple[tuple[str, ...], str, str]:
    found = list(_TARGETS.finditer(text))
    if len(found) > 1:
        raise UnrecognisedPhrase("name the targets once ('in clusters a, b and c')")
    if not found:
        return (), "", text
    match = found[0]
    names = tuple(dict.fromkeys(n for n in re.split(r"\s*(?:,\s*and|,|\band\b)\s*", match.group(2)) if n))
    kind = _TARGET_KINDS[match.group(1).lower().rstrip("s")]
    return names, kind, (text[: match.start()] + text[match.end() :]).strip()


def _apply_targets(
    intents: list[ResourceIntent], targets: tuple[str, ...], kind: str
) -> list[ResourceIntent]:
    out: list[ResourceIntent] = []
    hit = False
    for item in intents:
        rtype = CATALOG[item.type]
        fits = (
            rtype.fixed_target is None and rtype.provider != "local" and (not kind or rtype.provider == kind)
        )
        hit |= fits
        out.append(msgspec.structs.replace(item, targets=targets) if fits else item)
    if not hit:
        raise UnrecognisedPhrase(
            f"the request names targets {', '.join(targets)} but no resource in it runs on "
            f"{'that kind of target' if kind else 'a target'}; drop the targets or add a matching resource"
        )
    return out


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def _noun_at(words: Sequence[str], i: int) -> tuple[int, tuple[str, ...]] | None:
    """(length, candidate types) of the longest noun starting at ``words[i]``."""
    for size in range(min(_LONGEST, len(words) - i), 0, -1):
        key = tuple(w.lower() for w in words[i : i + size])
        if key in NOUNS:
            return size, NOUNS[key]
    return None


def _starts_clause(words: Sequence[str], i: int) -> bool:
    if i < len(words) and words[i].lower() in SPECIAL:
        return True
    if i < len(words) and words[i].lower() in VERBS:
        return True
    while i < len(words) and words[i].lower() in _ARTICLES:
        i += 1
    return i < len(words) and _noun_at(words, i) is not None


def _clauses(words: list[str]) -> list[list[str]]:
    clauses: list[list[str]] = [[]]
    i = 0
    while i < len(words):
        j = i
        while j < len(words) and words[j].lower() in {",", "and"}:
            j += 1
        if j > i and clauses[-1] and _starts_clause(words, j):
            clauses.append([])
            i = j
            continue
        clauses[-1].append(words[i])
        i += 1
    return [c for c in clauses if c]


def _clause(words: list[str], previous: Action | None, notes: list[str]) -> tuple[ResourceIntent, Action]:
    head = words[0].lower()
    if head not in VERBS and head not in SPECIAL and _noun_at(words, 0) is None:
        fixed = closest(head, _VERB_WORDS)
        if len(fixed) == 1:
            notes.append(f"read {words[0]!r} as {fixed[0]!r}")
            words, head = [fixed[0], *words[1:]], fixed[0]
    text = " ".join(words)
    if head in SPECIAL:
        return _special(head, text, notes)
    action = VERBS.get(head, previous)
    if head in VERBS:
        words = words[1:]
    if action is None:
        raise UnrecognisedPhrase(
            f"{text!r} does not say what to do: start with a verb; {_nearest_phrasing(words)}; verbs: create, "
            "delete, update, grant, revoke, attach, detach, enable, disable"
        )
    while words and words[0].lower() in _ARTICLES:
        words = words[1:]
    rtype, words = _noun(_field_of(words), text, notes)
    return _resource(rtype, action, words, text, notes), action


def _nearest_phrasing(words: list[str]) -> str:
    """'create <words>' if that parses, else the generic examples."""
    try:
        item, _ = _clause(["create", *words], None, [])
    except PlanError:
        return f"e.g. {_EXAMPLES}"
    return f"the nearest phrasing that compiles: 'create {' '.join(words)}' (a {item.type})"


def _field_of(words: list[str]) -> list[str]:
    """``mode of directory /x to 0700`` → ``directory /x mode to 0700``."""
    lowered = [w.lower() for w in words]
    if "of" not in lowered[1:4]:
        return words
    k = lowered.index("of", 1)
    found = _noun_at(words, k + 1)
    if found is None:
        return words
    end = k + 1 + found[0] + 1
    return words[k + 1 : end] + words[:k] + words[end:]


def _noun(words: list[str], text: str, notes: list[str]) -> tuple[ResourceType, list[str]]:
    found = _noun_at(words, 0) or _fuzzy_noun(words, notes)
    if found is None:
        if words and words[0].startswith("/"):
            raise AmbiguousPhrase(
                f"{words[0]!r} in {text!r} is a path but not which kind: say 'directory {words[0]}', "
                f"'file {words[0]} containing …' or 'symlink {words[0]} pointing to …'",
                ("local_directory", "local_file", "local_symlink"),
            )
        phrase = " ".join(words[:2]) or text
        close = nearest(phrase, [f"{' '.join(n)} ({t})" for n, ts in sorted(NOUNS.items()) for t in ts])
        raise UnknownResourceType(
            f"{phrase!r} (in {text!r}) is not a resource type in UPM's catalog"
            + (f"; the closest types: {', '.join(close)}" if close else "")
            + f". Known resource words: {', '.join(_NOUN_WORDS)}"
        )
    size, candidates = found
    if tuple(w.lower() for w in words[:size]) in _VAGUE:
        name = words[size] if size < len(words) else "NAME"
        raise AmbiguousPhrase(
            f"{' '.join(words[:size])!r} in {text!r} does not say which kind of cluster; UPM's catalog creates "
            f"Azure AKS clusters (say 'Create AKS cluster {name} in eastus'); for an existing Kubernetes "
            f"cluster, name it as a target ('Create namespace team-a in cluster {name}')",
            candidates,
        )
    if len(candidates) > 1:
        noun = " ".join(words[:size])
        options = "; ".join(
            f"{c} (say {next(n for n in CATALOG[c].nouns if n != noun.lower())!r})" for c in candidates
        )
        raise AmbiguousPhrase(
            f"{noun!r} in {text!r} could mean several resource types: {options}", candidates
        )
    return CATALOG[candidates[0]], words[size:]


def _fuzzy_noun(words: list[str], notes: list[str]) -> tuple[int, tuple[str, ...]] | None:
    """A resource word with a typo ("bukket", "s3 bukket"), read as the catalog's word and noted."""
    for size in (2, 1):
        if len(words) <= size:
            continue
        typed = " ".join(words[:size]).lower()
        fixed = closest(typed, _NOUN_WORDS, cutoff=85.0 if size == 2 else 80.0)
        if len(fixed) == 1:
            notes.append(f"read {' '.join(words[:size])!r} as {fixed[0]!r}")
            return size, NOUNS[tuple(fixed[0].split())]
    return None


def _resource(
    rtype: ResourceType, action: Action, words: list[str], text: str, notes: list[str]
) -> ResourceIntent:
    naming = rtype.fields[0]
    if not words or _is_keyword(rtype, words[0]):
        raise MissingRequiredField(
            f"{text!r} does not name the {rtype.nouns[0]}: put its {naming.name} right after "
            f"{rtype.nouns[0]!r} (e.g. '{rtype.nouns[0]} {_example(naming.name)}')"
        )
    fields: dict[str, Any] = {naming.name: _unquote(words[0])}
    targets: tuple[str, ...] = ()
    rest = words[1:]
    i = 0
    while i < len(rest):
        word = rest[i].lower()
        key = _key_at(rtype, rest, i)
        if key is not None:
            name, size = key
            i, value = _value(rtype, name, rest, i + size, text)
            fields[name] = value
            continue
        if word == "in" and i + 1 < len(rest) and rtype.nl_in is not None:
            if rtype.nl_in == "@target":
                targets = (rest[i + 1],)
            else:
                fields[rtype.nl_in] = rest[i + 1]
            i += 2
            continue
        if word in {"without", "no"} and i + 1 < len(rest) and _flag(rtype, rest[i + 1]) is not None:
            flag = _flag(rtype, rest[i + 1])
            assert flag is not None
            fields[flag[0]] = False if rtype.spec(flag[0]).kind == "bool" else None
            i += 2
            continue
        flag = _flag(rtype, word)
        if flag is not None:
            fields[flag[0]] = flag[1]
            i += 1
            continue
        suffix = _suffix(rtype, rest, i)
        if suffix is not None:
            fields[suffix[0]] = rest[i]
            i += 2
            continue
        if word in _FILLERS:
            i += 1
            continue
        fixed = closest(word, _words_of(rtype))
        if len(fixed) == 1 and fixed[0] != word:  # the word itself, out of place: no reading would change it
            notes.append(f"read {rest[i]!r} as {fixed[0]!r}")
            rest = [*rest[:i], *fixed[0].split(), *rest[i + 1 :]]
            continue
        raise UnrecognisedPhrase(
            f"could not understand {rest[i]!r} in {text!r}; {rtype.name} understands: {_vocabulary(rtype)}"
            + _without(text, rest[i])
        )
    return ResourceIntent(type=rtype.name, action=action, fields=fields, targets=targets)


def _key_at(rtype: ResourceType, words: Sequence[str], i: int) -> tuple[str, int] | None:
    best: tuple[str, int] | None = None
    for spec in rtype.fields:
        for key in spec.nl_keys:
            parts = key.split()
            if [w.lower() for w in words[i : i + len(parts)]] == parts and (
                best is None or len(parts) > best[1]
            ):
                best = (spec.name, len(parts))
    return best


def _value(rtype: ResourceType, name: str, words: Sequence[str], i: int, text: str) -> tuple[int, Any]:
    while i < len(words) and words[i].lower() in {"to", "=", "of", "is", "as", ":"}:
        i += 1
    if rtype.spec(name).kind == "map":
        pairs: dict[str, str] = {}
        while i < len(words) and ("=" in words[i] or words[i].lower() in {",", "and"}):
            if "=" in words[i]:
                k, _, v = words[i].partition("=")
                pairs[k] = _unquote(v)
            i += 1
        if not pairs:
            raise InvalidFieldValue(
                f"{name} in {text!r} needs key=value pairs, e.g. 'tagged team=alpha, env=prod'"
            )
        return i, pairs
    if i >= len(words):
        raise MissingRequiredField(
            f"{text!r} ends before the value of {name}; e.g. '{name} {_example(name)}'"
        )
    unit = i + 1 < len(words) and words[i + 1].lower() in rtype.spec(name).nl_suffix  # "retention 30 days"
    return i + 1 + unit, _unquote(words[i])


def _flag(rtype: ResourceType, word: str) -> tuple[str, Any] | None:
    for spec in rtype.fields:
        if word.lower() in spec.nl_flags:
            return spec.name, spec.nl_flags[word.lower()]
    return None


def _suffix(rtype: ResourceType, words: Sequence[str], i: int) -> tuple[str, int] | None:
    if i + 1 >= len(words) or not words[i].isdigit():
        return None
    for spec in rtype.fields:
        if words[i + 1].lower() in spec.nl_suffix:
            return spec.name, 2
    return None


def _words_of(rtype: ResourceType) -> tuple[str, ...]:
    """The words ``rtype`` understands after its name, for typo correction."""
    return tuple(sorted({*(k.split()[0] for s in rtype.fields for k in s.nl_keys), *(
        f for s in rtype.fields for f in s.nl_flags), *(x for s in rtype.fields for x in s.nl_suffix)} - {"to", "->"}))


def _without(text: str, word: str) -> str:
    """The nearest phrasing that parses: ``text`` without ``word``, if that parses."""
    shorter = [w for w in _tokens(text) if w != word]
    while shorter and shorter[-1].lower() in _FILLERS:
        shorter.pop()
    try:
        _clause(shorter, None, [])
    except PlanError:
        return ""
    return f"; the nearest phrasing that compiles: {' '.join(shorter)!r}"


def _is_keyword(rtype: ResourceType, word: str) -> bool:
    return word.lower() in {"in", "with", "and", ","} or _key_at(rtype, [word], 0) is not None


def _vocabulary(rtype: ResourceType) -> str:
    words = [f"'{k} …'" for s in rtype.fields for k in s.nl_keys]
    words += [f"'{f}'" for s in rtype.fields for f in s.nl_flags]
    words += [f"'N {x}'" for s in rtype.fields for x in s.nl_suffix]
    if rtype.nl_in:
        words.append("'in " + ("REGION" if rtype.nl_in == "@target" else rtype.nl_in.upper()) + "'")
    if rtype.cluster_bound:
        words.append("'in cluster CONTEXT'")
    return ", ".join(words) or "only its name"


def _example(name: str) -> str:
    return {"path": "/srv/app", "image": "nginx:1.27", "mode": "0750"}.get(name, "NAME")


def _unquote(word: str) -> str:
    if len(word) >= 2 and word[0] == word[-1] and word[0] in "'\"":
        return word[1:-1]
    return word


def _special(verb: str, text: str, notes: list[str]) -> tuple[ResourceIntent, Action]:
    if verb in {"grant", "revoke"} and _GRANT_ON.match(text):
        return _grant_on(verb, text)
    if verb in {"grant", "revoke"}:
        match = _GRANT.match(text) or _GRANT_TO.match(text)
        if match is None:
            raise UnrecognisedPhrase(
                f"could not read {text!r}; say e.g. 'Grant role analyst read access to database orders' "
                "(privileges: read, write, all)"
            )
        privilege = _PRIVILEGES.get(match.group("priv").lower())
        if privilege is None:
            raise InvalidFieldValue(
                f"{match.group('priv')!r} in {text!r} is not a privilege; use read, write or all"
            )
        fields: dict[str, Any] = {
            "role": match.group("role"),
            "database": match.group("db"),
            "privilege": privilege,
        }
        if match.group("schema"):
            fields["schema"] = match.group("schema")
        action: Action = "create" if verb == "grant" else "delete"
        return ResourceIntent(type="pg_grant", action=action, fields=fields), action
    if verb in {"attach", "detach"}:
        match = _ATTACH.match(text)
        if match is None:
            raise UnrecognisedPhrase(
                f"could not read {text!r}; say e.g. 'Attach policy arn:aws:iam::aws:policy/ReadOnlyAccess to role app'"
            )
        action = "create" if verb == "attach" else "delete"
        fields = {"role": match.group("role"), "policy_arn": match.group("arn")}
        return ResourceIntent(type="aws_iam_role_policy_attachment", action=action, fields=fields), action
    if verb in {"open", "close"}:
        return _port(verb, text)
    if verb == "rename":
        match = _RENAME.match(text)
        words = _tokens(match.group("rest")) if match else []
        while words and words[0].lower() in _ARTICLES:
            words = words[1:]
        if match is None or not words:
            raise UnrecognisedPhrase(f"could not read {text!r}; say e.g. 'Rename bucket logs-old to logs-new'")
        rtype, rest = _noun(words, text, notes)
        raise rename_refusal(rtype, rest[0] if rest else "NAME", match.group("new"))
    match = _TOGGLE.match(text)
    if match is None:
        raise UnrecognisedPhrase(f"could not read {text!r}; say e.g. 'Enable versioning on bucket logs-acme'")
    words = _tokens(match.group("rest"))
    if words and words[0].lower() in _ARTICLES:
        words = words[1:]
    rtype, rest = _noun(words, text, notes)
    flag = _flag(rtype, match.group("flag"))
    if flag is None or not rest:
        raise UnrecognisedPhrase(
            f"could not read {text!r}: {rtype.name} has no setting {match.group('flag')!r} to "
            f"{verb}; it understands {_vocabulary(rtype)}"
        )
    if verb == "disable" and rtype.spec(flag[0]).kind != "bool":
        raise UnrecognisedPhrase(
            f"{flag[0]} of {rtype.name} cannot be disabled in place; set another value instead"
        )
    item = _resource(rtype, "update", rest[:1], text, notes)
    value = flag[1] if verb == "enable" else False
    return ResourceIntent(type=item.type, action="update", fields={**item.fields, flag[0]: value}), "update"


def _port(verb: str, text: str) -> tuple[ResourceIntent, Action]:
    """``open port 443 on sg-0123abcd [from CIDR] [in REGION]`` → an ingress rule (``close``: its delete)."""
    match = _PORT.match(text)
    if match is None:
        raise UnrecognisedPhrase(
            f"could not read {text!r}; say e.g. 'Open port 443 on sg-0123abcd' or "
            "'Open udp port 53 on security group dns-sg from 10.0.0.0/16 in eu-west-1'"
        )
    fields: dict[str, Any] = {"group": match.group("group"), "port": match.group("port")}
    protocol = match.group("proto") or match.group("proto2")
    if protocol:
        fields["protocol"] = protocol.lower()
    if match.group("cidr"):
        fields["cidr"] = match.group("cidr")
    action: Action = "create" if verb == "open" else "delete"
    region = match.group("region")
    item = ResourceIntent(type="aws_security_group_ingress", action=action, fields=fields,
                          targets=(region,) if region else ())
    return item, action


def _grant_on(verb: str, text: str) -> tuple[ResourceIntent, Action]:
    """``grant role R read access to table [S.]T in database D`` (pg_table_grant) or ``grant role R
    usage on schema S in database D`` (pg_schema_grant); ``revoke``: its delete."""
    match = _GRANT_ON.match(text)
    assert match is not None
    word, kind = match.group("priv").lower(), match.group("kind").lower()
    privilege = (_SCHEMA_PRIVILEGES if kind == "schema" else _PRIVILEGES).get(word)
    if privilege is None or (kind == "schema" and match.group("schema")):
        choices = "usage, create or all" if kind == "schema" else "read, write or all"
        raise InvalidFieldValue(f"{match.group('priv')!r} in {text!r} is not a privilege on a {kind}; use {choices}")
    fields: dict[str, Any] = {"role": match.group("role"), "database": match.group("db"), "privilege": privilege}
    if kind == "table":
        fields["table"] = match.group("object")
        if match.group("schema"):
            fields["schema"] = match.group("schema")
    else:
        fields["schema"] = match.group("object")
    action: Action = "create" if verb == "grant" else "delete"
    return ResourceIntent(type=f"pg_{kind}_grant", action=action, fields=fields), action
