"""Log patterns: what a :class:`~rollout.guards.LogRate` guard counts, and the matchers a monitor runs.

A guard's ``pattern`` is one of:

* a **name** from :data:`DEFAULT_PATTERNS` (``do_churn``, ``do_young``, ``do_created``, ``persisted``): the
  runbook's own log lines;
* any **other str**: a substring matched in each log line, case-sensitive (``"greet failed"``);
* a compiled **regular expression** (``re.compile(r"greet (failed|timed out)")``), searched in each line.

A str made only of ``[a-z0-9_]`` that is not a default name (``"do_chrun"``) is refused at load: it reads
as a pattern name with a typo, and counting it as a substring would leave the guard at zero for ever.  To
count such a word, write a substring with a space or punctuation, or ``re.compile("timeout")``.

Every pattern has a **key**: the name its counts go by in the signals (``WindowStats.pattern_counts``), the
value of the ``pattern`` metric label, and the guard's default name (``<key>_per_hour``).  A default name is
its own key.  Otherwise the key is the text lower-cased, with every run of other characters than
``[a-z0-9]`` made one ``_``, at most 40 characters: ``"greet failed"`` -> ``greet_failed``.  When that
cannot be read back to the same pattern (capitals, punctuation, a regular expression, a cut, a default
name), six hex digits of a hash of the pattern are appended: ``"Greet failed!"`` -> ``greet_failed_3c1f0a``.
So distinct patterns have distinct keys, and keys are short, safe label values; the number of them is the
number of patterns the plan names, plus the defaults.

:func:`patterns_for` gives the matchers a monitor's signals count: the defaults plus every guard's pattern.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Final

__all__ = [
    "DEFAULT_PATTERNS",
    "Matcher",
    "Pattern",
    "check_pattern",
    "describe_pattern",
    "matcher_for",
    "pattern_key",
    "patterns_for",
    "split_matchers",
]

#: What a monitor's signals match in each log line: a substring, a regular expression given as a str that
#: starts with ``re:`` (the form :data:`DEFAULT_PATTERNS` values may take), or a compiled expression.
Matcher = str | re.Pattern[str]
#: What a plan writes in ``LogRate(pattern=...)``.
Pattern = str | re.Pattern[str]

#: The log lines the runbook (004) greps the tail for.  A value is a substring, or a regular expression
#: when it starts with ``re:``.
DEFAULT_PATTERNS: Final[Mapping[str, str]] = MappingProxyType({
    "do_churn": "DO Instance Churn",
    "do_young": "Young DO instance",
    "do_created": "DO Instance Created",
    "persisted": "Persisted ad state",
})

_IDENTIFIER: Final = re.compile(r"[a-z0-9_]+")
_NOT_SLUG: Final = re.compile(r"[^a-z0-9]+")
_KEY_MAX: Final = 40


def check_pattern(pattern: object) -> str | None:
    """Why ``pattern`` cannot be a ``LogRate`` pattern (a message without the ``LogRate(pattern=...)``
    prefix), or None when it can."""
    if isinstance(pattern, re.Pattern):
        if not isinstance(pattern.pattern, str):
            return f"must be compiled from a str, not bytes: re.compile({pattern.pattern.decode(errors='replace')!r})"
        return None
    if not isinstance(pattern, str):
        return None  # the caller's type check says what was expected
    if not pattern.strip():
        return f"must not be blank, got {pattern!r}"
    if _IDENTIFIER.fullmatch(pattern) and pattern not in DEFAULT_PATTERNS:
        import difflib

        names = ", ".join(DEFAULT_PATTERNS)
        close = difflib.get_close_matches(pattern, list(DEFAULT_PATTERNS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return (f"{pattern!r} is not a pattern name{hint}: the names are {names}. To count log lines that "
                f"contain text, use a substring with a space or punctuation, such as 'greet failed', or "
                f"re.compile({pattern!r})")
    return None


def pattern_key(pattern: Pattern) -> str:
    """The key the counts of ``pattern`` go by (see the module docstring): ``[a-z0-9_]``, at most 47 chars."""
    if isinstance(pattern, str) and pattern in DEFAULT_PATTERNS:
        return pattern
    text = pattern if isinstance(pattern, str) else pattern.pattern
    slug = _NOT_SLUG.sub("_", text.lower()).strip("_")[:_KEY_MAX].strip("_") or "pattern"
    if isinstance(pattern, str) and slug.replace("_", " ") == pattern and slug not in DEFAULT_PATTERNS:
        return slug
    if isinstance(pattern, str):
        identity = "s:" + pattern
    else:
        identity = f"re:{pattern.flags}:{pattern.pattern}"
    digest = hashlib.blake2s(identity.encode("utf-8", "surrogatepass"), digest_size=3).hexdigest()
    return f"{slug}_{digest}"


def matcher_for(pattern: Pattern) -> Matcher:
    """What the signals match for ``pattern``: a default name's rule, a substring, or the expression."""
    if isinstance(pattern, str):
        if pattern in DEFAULT_PATTERNS:
            return DEFAULT_PATTERNS[pattern]
        if pattern.startswith("re:"):  # a substring, not the ``re:`` form of a matcher
            return re.compile(re.escape(pattern))
    return pattern


def describe_pattern(pattern: Pattern) -> str:
    """``do_churn``, ``'greet failed'``, ``re.compile('greet (failed|timed out)')``: for verdicts."""
    if isinstance(pattern, str):
        text = pattern if pattern in DEFAULT_PATTERNS else repr(pattern)
    else:
        text = f"re.compile({pattern.pattern!r})"
    return text if len(text) <= 80 else text[:77] + "..."


def patterns_for(guards: Iterable[object], base: Mapping[str, Matcher] = DEFAULT_PATTERNS) -> Mapping[str, Matcher]:
    """The matchers a monitor's signals count: ``base`` (the defaults) plus the pattern of every guard that
    has one (``LogRate``), under its key.

    Raises:
        ValueError: two different patterns have the same key (a hash collision: change one of them).
    """
    out: dict[str, Matcher] = dict(base)
    for guard in guards:
        pattern = getattr(guard, "pattern", None)
        if not isinstance(pattern, str | re.Pattern):
            continue
        key = pattern_key(pattern)
        matcher = matcher_for(pattern)
        known = out.get(key)
        if known is None:
            out[key] = matcher
        elif known != matcher:
            raise ValueError(f"the log patterns {describe_pattern(pattern)} and {known!r} both count as {key!r}; "
                             "change one of them")
    return MappingProxyType(out)


def split_matchers(patterns: Mapping[str, Matcher]) -> tuple[
        tuple[str, ...], list[tuple[int, str]], list[tuple[int, re.Pattern[str]]]]:
    """The names of ``patterns``, then its substrings and its regular expressions, each with its index."""
    substrings: list[tuple[int, str]] = []
    regexes: list[tuple[int, re.Pattern[str]]] = []
    for i, value in enumerate(patterns.values()):
        if isinstance(value, re.Pattern):
            regexes.append((i, value))
        elif value.startswith("re:"):
            regexes.append((i, re.compile(value[3:])))
        else:
            substrings.append((i, value))
    return tuple(patterns), substrings, regexes
