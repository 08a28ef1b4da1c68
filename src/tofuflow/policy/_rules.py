"""The rules of a Rego module, found by their layout (rule heads at the start of a line,
as ``opa fmt`` writes them): enough to name a rule's line in an error message.

    [(head.name, head.line) for head in rule_heads(source)]   # [('deny', 5), ...]
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["RuleHead", "rule_heads", "without_comments"]

# `name contains`, `name if`, `name :=`, `name[`, `default name`; not functions (`f(x)`).
_RULE_HEAD = re.compile(
    r"^(?:default[ \t]+)?(?P<name>[A-Za-z_]\w*)(?=[ \t]*(?:contains\b|if\b|:=|=|\[|\{))",
    re.MULTILINE,
)


@dataclass(frozen=True)
class RuleHead:
    """One definition of a rule: its name, its 1-based line, and its text after the name
    up to the next rule (comments removed)."""

    name: str
    line: int
    body: str


def rule_heads(source: str) -> list[RuleHead]:
    """Every rule definition in ``source``, in order (a rule may be defined several times)."""
    text = without_comments(source)
    matches = [m for m in _RULE_HEAD.finditer(text) if m.group("name") not in ("package", "import")]
    ends = [m.start() for m in matches[1:]] + [len(text)]
    return [
        RuleHead(m.group("name"), text.count("\n", 0, m.start()) + 1, text[m.end() : end])
        for m, end in zip(matches, ends, strict=False)  # no matches: one end, no heads
    ]


def without_comments(source: str) -> str:
    """``source`` with comments blanked, line for line (so line numbers still hold)."""
    # Good enough for layout: a '#' inside a string literal only shortens that line.
    return "\n".join(line.split("#", 1)[0] for line in source.splitlines())
