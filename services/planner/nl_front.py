"""The forgiving front of the natural-language parser: a request as people type it → the grammar of
:mod:`services.planner.nl`, plus a note for every reading that is not verbatim.

Pure and deterministic (tables are tuples, scanned in a fixed order). What it rewrites:

- politeness and filler: "please", "can you", "I need to", "pls", "for me", "make me a …";
- phrasal and synonym verbs: "spin up"/"set up" → create, "tear down"/"get rid of" → delete,
  "turn on"/"turn off" → enable/disable, "give" → grant, "I need a …"/"we need a …" → create;
- passive and declarative forms: "X should be created", "X is to be deleted", "X: create";
- names after "called"/"named"; "in the prod cluster" → "in cluster prod";
- abbreviations: k8s/kubernetes/aws qualifiers before a noun, pg/postgresql → postgres, dlq → sqs queue;
- "deploy IMAGE as deployment NAME" → "create deployment NAME with image IMAGE";
- "symlink A to B" → "create symlink A to B" (the link A, pointing to B, as ``ln -s B A`` makes);
- plurals and lists: "namespaces a and b in cluster c" → one clause per name, modifiers shared.

Typos are corrected later, where the parser knows a verb or a noun is expected (:func:`closest`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rapidfuzz import fuzz, process

_TOKEN = re.compile(r"'[^']*'|\"[^\"]*\"|,|[^\s,]+")

# replacement ← phrases ("|"-separated); matched longest first, so "i need to" wins over "i need".
_REWRITES: tuple[tuple[str, str], ...] = (
    (
        "",
        "please|pls|plz|kindly|can you|could you|would you|can we|could we|will you|for me|for us|thanks"
        "|thank you|thx|i need to|we need to|i want to|we want to|i'd like to|i would like to|we'd like to"
        "|let's|lets|go ahead and|quickly|hey|hi",
    ),
    (
        "create",
        "spin up|spinup|set up|setup|stand up|bring up|build|launch|spawn|establish|allocate|ensure"
        "|i need|we need|i want|we want|i'd like|there should be|there must be",
    ),
    ("delete", "tear down|teardown|get rid of|take down|clean up|decommission|deprovision|nuke|erase|purge"),
    ("update", "bump|edit|adjust|increase|reduce"),
    ("enable", "turn on|switch on"),
    ("disable", "turn off|switch off"),
    ("grant", "give"),
    ("revoke", "take away"),
    ("postgres", "postgresql|psql|pg"),
    ("sqs queue", "dlq"),
    ("dynamodb table", "dynamo table|ddb table"),
    ("configmap", "cm"),
    ("aks cluster", "azure kubernetes cluster|azure cluster"),
    ("namespace", "k8s ns|kubernetes ns"),
)
_PHRASES: tuple[tuple[str, str], ...] = tuple(
    sorted(
        ((phrase, replacement) for replacement, phrases in _REWRITES for phrase in phrases.split("|")),
        key=lambda pair: (-len(pair[0].split()), pair[0]),
    )
)
_NOTED = {"dlq", "give", "take away", "i need", "we need", "i want", "we want", "i'd like"}
_PARTICIPLES: dict[str, str] = {
    **dict.fromkeys(("created", "added", "provisioned", "made", "deployed", "built", "set up"), "create"),
    **dict.fromkeys(("deleted", "removed", "dropped", "destroyed", "torn down"), "delete"),
    **dict.fromkeys(("updated", "changed", "modified", "scaled", "resized"), "update"),
}
_PASSIVE = re.compile(
    r"^(?P<what>.+?)\s+(?:should|must|needs to|has to|have to|is to|are to|will|shall|to)\s+be\s+"
    rf"(?P<verb>{'|'.join(sorted(_PARTICIPLES, key=len, reverse=True))})\b(?P<rest>.*)$",
    re.IGNORECASE,
)
_TRAILING_VERB = re.compile(
    r"^(?P<what>.+?)(?:\s*:\s*|\s+[-—]\s+)(?P<verb>create|delete|update|remove|add|drop)(?:\s+it)?$",
    re.IGNORECASE,
)
_CALLED = re.compile(r"\b(?:called|named|with (?:the )?name|by the name(?: of)?)\s+", re.IGNORECASE)
_AT_PATH = re.compile(r"\b(?:at|under)\s+(?=/)", re.IGNORECASE)  # "a directory at /srv/app"
_IN_THE_X = re.compile(
    r"\b(in|on)\s+(?:the\s+)?(?!clusters?\b|namespace\b)([\w.-]+)\s+(cluster|context|region|server|namespace)\b",
    re.IGNORECASE,
)
_DEPLOY_AS = re.compile(
    r"^(?:deploy|run|create|launch)\s+(?:image\s+)?(?P<image>[\w.-]+(?:/[\w.-]+)*(?::[\w.-]+)?)\s+as\s+(?:an?\s+)?"
    r"(?:(?:k8s|kubernetes)\s+)?(?:deployment|deploy|app)\s+(?:called\s+|named\s+)?(?P<name>[\w.-]+)(?P<rest>.*)$",
    re.IGNORECASE,
)
_LINK_VERB = re.compile(r"^(?:sym)?link\s+(?=/)", re.IGNORECASE)  # "symlink /srv/current to /srv/app"
_VERB_ME = {"create", "make", "delete", "grant"}  # "make me a namespace"
_QUALIFIERS = ("k8s", "kubernetes", "aws", "amazon", "azure", "local", "a", "an", "the", "new")
_TARGETED = {"in", "on", "across", "to"}
_LIST_STOP = {
    "in",
    "on",
    "with",
    "without",
    "tagged",
    "owned",
    "for",
    "containing",
    "pointing",
    "as",
    "to",
    "at",
    "using",
    "across",
    "from",
    "having",
    "and",
    ",",
}


def normalise(request: str, nouns: Sequence[str], verbs: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    """``request`` in the parser's grammar, and the notes on every non-verbatim reading.

    ``nouns`` are the catalog's resource words (singular, lowercase), ``verbs`` the parser's verbs.
    """
    notes: list[str] = []
    text = " ".join(request.split()).strip().rstrip(".!?").strip()
    text = _phrases(text, nouns, notes).strip(" ,")
    match = _PASSIVE.match(text) or _TRAILING_VERB.match(text)
    if match is not None:
        verb = _PARTICIPLES.get(match.group("verb").lower(), match.group("verb").lower())
        rest = match.groupdict().get("rest") or ""
        text = f"{verb} {match.group('what')}{rest}"
        notes.append(f"read the request as {text!r}")
    if _LINK_VERB.match(text):
        text = _LINK_VERB.sub("create symlink ", text, count=1)
        notes.append(f"read the request as {text!r} (the link first, then what it points to)")
    text = _CALLED.sub("", text)
    text = _AT_PATH.sub("", text)
    text = _IN_THE_X.sub(lambda m: f"{m.group(1)} {m.group(3)} {m.group(2)}", text)
    deploy = _DEPLOY_AS.match(text)
    if deploy is not None and not deploy.group("image").startswith("/"):
        text = f"create deployment {deploy.group('name')} with image {deploy.group('image')}{deploy.group('rest')}"
    words = _qualifiers(_TOKEN.findall(text), nouns)
    words = _plurals(words, nouns, verbs, notes)
    return " ".join(words), tuple(notes)


def closest(word: str, choices: Sequence[str], cutoff: float = 80.0) -> tuple[str, ...]:
    """The best fuzzy matches of ``word`` among ``choices`` (all those tied for the best score)."""
    if len(word) < 4:
        return ()
    found = process.extract(word.lower(), choices, scorer=fuzz.ratio, score_cutoff=cutoff, limit=None)
    if not found:
        return ()
    best = max(score for _, score, _ in found)
    return tuple(sorted(c for c, score, _ in found if score == best))


def nearest(word: str, choices: Sequence[str], limit: int = 3) -> tuple[str, ...]:
    """Up to ``limit`` choices closest to ``word`` (best first, ties alphabetical), for refusals."""
    scored = process.extract(word.lower(), choices, scorer=fuzz.WRatio, limit=None)
    ranked = sorted(((-score, c) for c, score, _ in scored if score >= 50))
    return tuple(c for _, c in ranked[:limit])


def _phrases(text: str, nouns: Sequence[str], notes: list[str]) -> str:
    words = _TOKEN.findall(text)
    out: list[str] = []
    i = 0
    while i < len(words):
        in_name_slot = bool(out) and _noun_len(out, len(out) - 1, nouns) > 0
        for phrase, replacement in () if in_name_slot else _PHRASES:
            parts = phrase.split()
            if [w.lower() for w in words[i : i + len(parts)]] == parts:
                if phrase in _NOTED:
                    notes.append(f"read {' '.join(words[i : i + len(parts)])!r} as {replacement!r}")
                out.extend(replacement.split())
                i += len(parts)
                break
        else:
            out.append(words[i])
            i += 1
        if out and out[-1].lower() in _VERB_ME and i < len(words) and words[i].lower() in {"me", "us"}:
            i += 1
    return " ".join(out)


def _noun_len(words: Sequence[str], i: int, nouns: Sequence[str]) -> int:
    for size in (3, 2, 1):
        if " ".join(w.lower() for w in words[i : i + size]) in nouns and i + size <= len(words):
            return size
    return 0


def _qualifiers(words: list[str], nouns: Sequence[str]) -> list[str]:
    """Drop a qualifier ("k8s", "aws") before a noun when qualifier + noun is not itself a noun."""
    out: list[str] = []
    for i, word in enumerate(words):
        if (
            word.lower() in _QUALIFIERS[:5]
            and _noun_len(words, i, nouns) == 0
            and _noun_len(words, i + 1, nouns)
        ):
            continue
        out.append(word)
    return out


def _singular(word: str, nouns: Sequence[str]) -> str | None:
    low = word.lower()
    for cut, add in (("ies", "y"), ("es", ""), ("s", "")):
        if low.endswith(cut) and low[: -len(cut)] + add in nouns:
            return low[: -len(cut)] + add
    return None


def _plurals(words: list[str], nouns: Sequence[str], verbs: Sequence[str], notes: list[str]) -> list[str]:
    """``namespaces a and b in cluster c`` → ``namespace a in cluster c and namespace b in cluster c``."""
    for i, word in enumerate(words):
        start, noun = i - 1, _singular(" ".join(words[i - 1 : i + 1]), nouns) if i else None
        if noun is None:
            start, noun = i, _singular(word, nouns)
        if (
            noun is None
            or i + 1 >= len(words)
            or {w.lower() for w in words[max(0, start - 2) : start]} & _TARGETED
        ):
            continue
        names: list[str] = []
        j = i + 1
        while j < len(words) and words[j].lower() not in _LIST_STOP and not _noun_len(words, j, nouns):
            names.append(words[j])
            k = j + 1
            while k < len(words) and words[k].lower() in {"and", ","}:
                k += 1
            if k < len(words) and (words[k].lower() in verbs or _noun_len(words, k, nouns)):
                j += 1
                break
            j = k
        if not names:
            continue
        end = j
        while end < len(words) and not (
            words[end].lower() in {"and", ","}
            and end + 1 < len(words)
            and (words[end + 1].lower() in verbs or _noun_len(words, end + 1, nouns))
        ):
            if (
                words[end].lower() in {"in", "on", "across"}
                and end + 1 < len(words)
                and words[end + 1].lower().rstrip("s") in {"cluster", "region", "server", "target", "context"}
            ):
                break
            end += 1
        while end > j and words[end - 1].lower() in {"and", ","}:
            end -= 1
        shared = words[j:end]
        clauses = [[noun, name, *shared] for name in names]
        expanded = [w for clause in clauses for w in ("and", *clause)][1:]
        notes.append(f"read {' '.join(words[start:end])!r} as {' '.join(expanded)!r}")
        return _plurals([*words[:start], *expanded, *words[end:]], nouns, verbs, notes)
    return words
