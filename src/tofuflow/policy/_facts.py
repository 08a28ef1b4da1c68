"""What tofuflow works out for the policies before they run: ``input.derived``.

    derived = derive(input_doc)   # {"groups": [...], "protected": [...], "allowed": [...]}

Glob matching happens here, in Python, not in Rego: rego-cpp's ``glob.match`` reads ``[``
and ``]`` as a character class that cannot be escaped (addresses are full of them:
``aws_instance.web[0]``, ``module.app["blue"]``), its delimiter defaults differ from OPA's,
and matching 10,000 addresses in Rego costs more than the whole evaluation budget. Here
``*`` matches any run of characters and nothing else is special.

The built-in settings are validated here too, so a typo fails closed with a ConfigError
instead of silently switching a rule off.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tofuflow.errors import ConfigError, DocumentError

__all__ = ["Settings", "check_settings", "derive", "glob_regex", "settings_of"]

_INPUT_HINT = "build the policy input with tofuflow.policy.build_input"


@dataclass(frozen=True)
class Grant:
    """One entry of ``settings.allowed``; ``None`` lists allow everything."""

    subject: str
    types: tuple[str, ...] | None
    modules: tuple[str, ...] | None


@dataclass(frozen=True)
class Settings:
    """The workspace settings the built-in library reads, validated."""

    protected: tuple[str, ...] = ()
    allowed: tuple[Grant, ...] | None = None


def glob_regex(patterns: Iterable[str]) -> re.Pattern[str]:
    """One regex matching (``fullmatch``) any of ``patterns``; ``*`` is the only wildcard.

    glob_regex(["module.db.*"]).fullmatch("module.db.aws_db_instance.main")  # a match
    """
    alternatives = [".*".join(map(re.escape, p.split("*"))) for p in patterns]
    # No patterns match nothing; an empty alternation would match the empty string.
    return re.compile("|".join(alternatives) if alternatives else "(?!)", re.DOTALL)


def derive(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The ``derived`` section for a policy input made by ``build_input``."""
    changes = _resource_changes(doc)
    settings = settings_of(_section(doc, "workspace").get("settings") or {})
    groups = _groups(changes)
    return {
        "groups": list(groups.values()),
        "protected": _protected(changes, settings.protected),
        "allowed": _allowed(settings.allowed, _subject(doc), groups.values()),
    }


def check_settings(settings: Mapping[str, Any]) -> None:
    """Raise ConfigError if the built-in keys of workspace ``settings`` are malformed.

    check_settings({"max_deletions": 10, "protected": ["module.db.*"]})   # fine

    ``evaluate`` checks them anyway; call this when loading configuration to fail early.
    """
    settings_of(settings)


def settings_of(settings: Mapping[str, Any]) -> Settings:
    """Validate the built-in keys of ``workspace.settings``; other keys are the user's own."""
    if not isinstance(settings, Mapping):
        raise ConfigError("workspace settings must be a JSON object (a mapping of name to value)")
    _check_misspelt(settings)
    _check_max_deletions(settings.get("max_deletions"))
    if not isinstance(settings.get("require_approval", False), bool):
        raise ConfigError("settings.require_approval must be true or false")
    return Settings(
        protected=_globs(settings.get("protected", []), "settings.protected"),
        allowed=_grants(settings["allowed"]) if "allowed" in settings else None,
    )


BUILTIN_SETTINGS = ("max_deletions", "protected", "allowed", "require_approval")


def _check_misspelt(settings: Mapping[str, Any]) -> None:
    """Other keys are the user's own, but one this close to a built-in key is a typo that
    would switch the built-in rule off (``require_aproval``: an auto-approval)."""
    for key in settings:
        if not isinstance(key, str) or key in BUILTIN_SETTINGS:
            continue
        close = difflib.get_close_matches(key.lower(), BUILTIN_SETTINGS, n=1, cutoff=0.8)
        if close:
            raise ConfigError(
                f'settings.{key} is no built-in setting; did you mean "{close[0]}"? A '
                "misspelt built-in setting would switch its rule off. (A setting of your "
                "own policies needs a name less like a built-in one.)"
            )


def _check_max_deletions(value: Any) -> None:
    # bool is an int in Python; `true` as a limit is a mistake, not 1.
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ConfigError(
            f"settings.max_deletions must be a whole number >= 0 (or unset for no limit), "
            f"not {value!r}"
        )


def _globs(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(p, str) for p in value):
        raise ConfigError(f'{where} must be a list of glob strings, e.g. ["module.db.*"]')
    return tuple(value)


def _grants(value: Any) -> tuple[Grant, ...]:
    if not isinstance(value, list | tuple):
        raise ConfigError(
            'settings.allowed must be a list of grants like {"subject": "repo:acme/*", '
            '"types": ["aws_*"], "modules": ["module.network*"]}'
        )
    return tuple(_grant(item, f"settings.allowed[{i}]") for i, item in enumerate(value))


def _grant(item: Any, where: str) -> Grant:
    if not isinstance(item, Mapping) or not isinstance(item.get("subject"), str):
        raise ConfigError(f'{where} must be an object with a "subject" glob string')
    unknown = set(item) - {"subject", "types", "modules"}
    if unknown:
        # A misspelt "module" would otherwise allow every module.
        raise ConfigError(
            f"{where} has unknown keys {sorted(unknown)}: use subject, types, modules"
        )
    return Grant(
        subject=item["subject"],
        types=_globs(item["types"], f"{where}.types") if "types" in item else None,
        modules=_globs(item["modules"], f"{where}.modules") if "modules" in item else None,
    )


def _section(doc: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = doc.get(key)
    if not isinstance(value, Mapping):
        raise DocumentError(f"policy input has no {key!r} object — {_INPUT_HINT}")
    return value


def _resource_changes(doc: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]:
    changes = _section(doc, "plan").get("resource_changes")
    if not isinstance(changes, list | tuple):
        raise DocumentError(f"policy input has no plan.resource_changes list — {_INPUT_HINT}")
    for i, rc in enumerate(changes):
        if not isinstance(rc, Mapping) or not all(
            isinstance(rc.get(key), str) for key in ("address", "module", "type", "action")
        ):
            raise DocumentError(
                f"policy input: plan.resource_changes[{i}] needs string address, module, type "
                f"and action — {_INPUT_HINT}"
            )
    return changes


def _subject(doc: Mapping[str, Any]) -> str | None:
    requester = (doc.get("run") or {}).get("requester")
    subject = requester.get("subject") if isinstance(requester, Mapping) else None
    return subject if isinstance(subject, str) else None


def _groups(changes: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    # Policies about *what* is touched look at tens of groups, not 10,000 changes.
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for rc in changes:
        key = (rc["module"], rc["type"])
        group = groups.get(key)
        if group is None:
            groups[key] = {"module": key[0], "type": key[1], "count": 1, "first": rc["address"]}
        else:
            group["count"] += 1
    return groups


def _protected(
    changes: Sequence[Mapping[str, Any]], patterns: Sequence[str]
) -> list[dict[str, str]]:
    if not patterns:
        return []
    any_match = glob_regex(patterns).fullmatch
    each = [(p, glob_regex([p]).fullmatch) for p in patterns]
    return [
        {"address": rc["address"], "action": rc["action"], "pattern": _first(each, rc["address"])}
        for rc in changes
        if any_match(rc["address"])
    ]


def _first(each: Sequence[tuple[str, Any]], value: str) -> str:
    return next(pattern for pattern, match in each if match(value))


def _allowed(
    grants: Sequence[Grant] | None, subject: str | None, groups: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    if grants is None:
        return []
    groups = list(groups)
    types = {g["type"] for g in groups}
    modules = {g["module"] for g in groups}
    return [
        {
            "subject": subject is not None and _matches([grant.subject], subject),
            "types": _matching(grant.types, types),
            "modules": _matching(grant.modules, modules),
        }
        for grant in grants
    ]


def _matches(patterns: Sequence[str], value: str) -> bool:
    return glob_regex(patterns).fullmatch(value) is not None


def _matching(patterns: Sequence[str] | None, values: Iterable[str]) -> dict[str, bool]:
    # Objects, not lists: Rego looks a key up in constant time.
    if patterns is None:
        return dict.fromkeys(values, True)
    match = glob_regex(patterns).fullmatch
    return {value: True for value in values if match(value)}
