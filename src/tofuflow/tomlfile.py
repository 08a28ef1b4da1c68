"""Where a key is in a TOML file, and how a problem with it is named.

    located(path, text, ("server", "prot"), 'unknown key; did you mean "port"?')
    # -> (2, 'server.toml:2: server.prot: unknown key; did you mean "port"?')

Shared by tofuflow.toml (``tofuflow.project``) and the server TOML
(``tofuflow.server.config``): every problem names the file, the line, the key and the
fix, all problems at once in file order.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
import tomllib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

__all__ = [
    "Keys",
    "as_written",
    "dotted_key",
    "file_label",
    "in_file_order",
    "key_line",
    "located",
    "suggest",
    "syntax_fix",
    "toml_key",
]

Keys = tuple[str | int, ...]
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def syntax_fix(text: str, error: tomllib.TOMLDecodeError) -> str:
    """What to do about a syntax error: quote a table header's name that is not a bare key
    (``[workspaces.app/dev]``: TOML itself says only "Expected ']'"), else fix the syntax."""
    found = re.search(r"at line (\d+)", str(error))
    lines = text.splitlines()
    if found and 0 < int(found.group(1)) <= len(lines):
        header = re.fullmatch(
            r"\s*(\[\[?)([^\[\]]+)(\]\]?)\s*(#.*)?", lines[int(found.group(1)) - 1]
        )
        if header:
            opening, inner, closing = header.group(1), header.group(2), header.group(3)
            parts = [p.strip() for p in re.findall(r'"[^"]*"|\'[^\']*\'|[^.]+', inner)]
            bad = [p for p in parts if p[:1] not in "\"'" and not _BARE_KEY.match(p)]
            if bad:
                fixed = ".".join(json.dumps(p) if p in bad else p for p in parts)
                odd = " ".join(f"'{c}'" for c in sorted({c for p in bad for c in p}) if
                               not _BARE_KEY.match(c))  # fmt: skip
                return (
                    f"a name with {odd} must be quoted in a table header: {opening}{fixed}{closing}"
                )
    return "fix the syntax there"


def suggest(name: str, choices: Iterable[str], then: str = "") -> str:
    """``'; did you mean "tags"?'`` for the nearest choice, or ``""`` when none is close.

    ``then``: the text that follows in the message, which after the question starts a
    sentence of its own (``'; did you mean "own"? Use "tofuflow" or "own"'``). Without a
    suggestion the caller goes on as it would have (``suggest(...) or f"; {then}"``)."""
    close = difflib.get_close_matches(name, list(choices), n=1)
    if not close:
        return ""
    question = f'; did you mean "{close[0]}"?'
    return f"{question} {then[:1].upper()}{then[1:]}" if then else question


def key_line(text: str, keys: Keys) -> int | None:
    """The 1-based line of ``text`` (TOML) where the key path ``keys`` is defined.

        key_line('[server]\\nprot = 1\\n', ("server", "prot"))   # 2

    tomllib keeps no positions, so this asks tomllib itself: the key is defined in the
    first statement whose prefix of the document holds it. Statement ends are found by a
    small scan (multi-line strings, arrays and inline tables span lines), the statement by
    bisection, each step parsing a prefix with tomllib: comments, strings that mention the
    key, quoting and dotted keys cannot mislead it. None when the path is not there.
    """
    lines = text.splitlines(keepends=True)
    ends = _statement_ends(lines)

    @functools.cache
    def holds(index: int) -> bool | None:
        try:
            return _holds(tomllib.loads("".join(lines[: ends[index]])), keys)
        except tomllib.TOMLDecodeError:  # the scan misjudged an odd string: not an end
            return None

    low, high = 0, len(ends) - 1  # holds(low) is false: the empty prefix holds nothing
    if not holds(high):
        return None
    while high - low > 1:  # invariant: the key is defined after ends[low], by ends[high]
        middle = next(
            (m for m in _outward((low + high) // 2, low, high) if holds(m) is not None), None
        )
        if middle is None:
            break
        if holds(middle):
            high = middle
        else:
            low = middle
    # The statement's first line that is not blank or a comment.
    for number in range(ends[low] + 1, ends[high] + 1):
        stripped = lines[number - 1].strip()
        if stripped and not stripped.startswith("#"):
            return number
    return ends[high]


def _outward(middle: int, low: int, high: int) -> Iterator[int]:
    """middle, middle + 1, middle - 1, ... strictly between low and high."""
    for step in range(high - low):
        for candidate in (middle + step, middle - step) if step else (middle,):
            if low < candidate < high:
                yield candidate


def _statement_ends(lines: Sequence[str]) -> list[int]:
    """The line counts after which no string, array or inline table is left open."""
    ends, depth, open_string = [0], 0, ""
    for number, line in enumerate(lines, 1):
        index = 0
        while index < len(line):
            if open_string:  # inside a multi-line string: look for its end
                if open_string == '"""' and line[index] == "\\":
                    index += 2  # an escape: \" does not end it
                elif line.startswith(open_string, index):
                    # Up to two quotes may precede the closing three: """a""""
                    run = len(line) - index - len(line[index:].lstrip(open_string[0]))
                    index, open_string = index + min(run, 5), ""
                else:
                    index += 1
                continue
            char = line[index]
            if char == "#":
                break
            if line.startswith(('"""', "'''"), index):
                index, open_string = index + 3, line[index : index + 3]
                continue
            if char in "\"'":  # a one-line string: skip it (escapes only in "...")
                index += 1
                while index < len(line) and line[index] != char:
                    index += 2 if char == '"' and line[index] == "\\" else 1
            elif char in "[{":
                depth += 1
            elif char in "]}":
                depth -= 1
            index += 1
        if not open_string and depth <= 0:
            depth = 0
            ends.append(number)
    if ends[-1] != len(lines):
        ends.append(len(lines))
    return ends


def _holds(data: object, keys: Keys) -> bool:
    for key in keys:
        if isinstance(key, int):
            if not isinstance(data, list) or key >= len(data):
                return False
            data = data[key]
        elif isinstance(data, dict) and key in data:
            data = data[key]
        else:
            return False
    return True


def located(file: Path, text: str | None, keys: Keys, message: str) -> tuple[int, str]:
    """``(line, "FILE:LINE: KEY.PATH: message")``; without a line ``FILE: KEY.PATH: ...``."""
    line = None
    # A missing key points at its table: the nearest part of the path that is there.
    for end in range(len(keys), 0, -1):
        line = key_line(text, keys[:end]) if text is not None else None
        if line is not None:
            break
    where = f"{file_label(file)}:{line}" if line else file_label(file)
    path = f"{dotted_key(keys)}: " if keys else ""
    return line or 0, f"{where}: {path}{message}"


def in_file_order(problems: Sequence[tuple[int, str]]) -> str:
    """The messages one per line, in the order of their lines in the file."""
    return "\n".join(message for _, message in sorted(problems, key=lambda item: item[0]))


def as_written(value: object) -> str:
    """A value as the user wrote it, with its TOML type when that helps."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return json.dumps(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__}"


def dotted_key(keys: Keys) -> str:
    """A TOML dotted key, quoting keys that are not bare: workspaces."app/prod".var_files[0]"""
    text = ""
    for key in keys:
        text += f"[{key}]" if isinstance(key, int) else f".{toml_key(key)}"
    return text.removeprefix(".")


def toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def file_label(file: Path) -> str:
    """The file as the user would type it: relative to the cwd when inside it."""
    try:
        return str(file.relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):  # elsewhere, or the cwd was deleted
        return str(file)
