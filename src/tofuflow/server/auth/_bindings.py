"""Role bindings: which verified OIDC identities get which role on which workspaces.

    bindings = bindings_from_config([
        {"role": "planner", "workspaces": "app/*", "subject": "sc://contoso/infra/plan-*",
         "issuer": "https://vstoken.dev.azure.com/<org id>"},
        {"role": "applier", "workspaces": "app/prod", "claims": {"rpo_ref": "refs/heads/main"},
         "subject": "sc://contoso/infra/apply"},
    ])
    principal = principal_from_claims(verifier.verify(token), bindings)

A binding matches when every matcher it sets matches (issuer AND subject AND groups AND
claims). Subject and claim patterns are case-sensitive fnmatch globs in which ``*`` also
matches ``/``: ``sc://contoso/*`` covers every service connection of every project of the
organisation. Set ``issuer`` whenever more than one issuer is trusted, so a subject from
one issuer cannot match a binding written for another.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from types import MappingProxyType
from typing import Any

from tofuflow.errors import AuthError, ConfigError
from tofuflow.server.auth._roles import Grant, Principal, Role

__all__ = [
    "SAFE_CLAIMS",
    "Binding",
    "bindings_from_config",
    "grants_for",
    "principal_from_claims",
    "safe_claims",
]

# The claims kept for the audit log: who, which issuer, when, and which pipeline run.
SAFE_CLAIMS = frozenset(
    {
        # RFC 7519 and OIDC
        "iss", "sub", "aud", "exp", "iat", "nbf", "jti", "azp", "groups", "roles",
        # Microsoft Entra (Azure DevOps tokens from an Entra issuer)
        "tid", "oid", "appid",
        # Azure DevOps (vstoken.dev.azure.com)
        "org_id", "prj_id", "def_id", "rpo_id", "rpo_uri", "rpo_ver", "rpo_ref", "run_id",
        # GitHub Actions
        "actor", "actor_id", "repository", "repository_id", "repository_owner",
        "repository_owner_id", "repository_visibility", "ref", "ref_type", "ref_protected",
        "sha", "workflow", "workflow_ref", "workflow_sha", "job_workflow_ref",
        "job_workflow_sha", "run_number", "run_attempt", "event_name", "environment",
        "head_ref", "base_ref", "runner_environment", "enterprise",
    }
)  # fmt: skip

_BINDING_KEYS = ("role", "workspaces", "subject", "issuer", "groups", "claims")
_GROUP_CLAIMS = ("groups", "roles")


@dataclass(frozen=True)
class Binding:
    """Grants ``role`` on ``workspaces`` to identities matching all the matchers set.

    Binding(Role.PLANNER, "app/*", subject="sc://contoso/infra/*").matches(claims)

    A binding must narrow by subject, groups or claims: one that would match every
    identity of an issuer is refused as too broad.
    """

    role: Role
    workspaces: str
    subject: str | None = None
    issuer: str | None = None
    groups: tuple[str, ...] = ()
    claims: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        Grant(self.role, self.workspaces)  # the same role and pattern checks as a grant
        object.__setattr__(self, "groups", tuple(self.groups))
        object.__setattr__(self, "claims", MappingProxyType(dict(self.claims)))
        if not self._narrows():
            raise ConfigError(
                "binding is too broad: it would match every identity; narrow it with a "
                "subject pattern, groups or claims"
            )

    def _narrows(self) -> bool:
        patterns = [self.subject] if self.subject is not None else []
        patterns.extend(self.claims.values())
        return bool(self.groups) or any(not _wildcard_only(p) for p in patterns)

    @property
    def grant(self) -> Grant:
        return Grant(self.role, self.workspaces)

    def matches(self, claims: Mapping[str, Any]) -> bool:
        """Whether verified ``claims`` satisfy every matcher of this binding."""
        if self.issuer is not None and claims.get("iss") != self.issuer:
            return False
        if self.subject is not None and not _glob(claims.get("sub"), self.subject):
            return False
        if self.groups and not _in_groups(claims, self.groups):
            return False
        return all(_glob(claims.get(name), pattern) for name, pattern in self.claims.items())


def _wildcard_only(pattern: str) -> bool:
    return not pattern.replace("*", "").replace("?", "")


def _glob(value: object, pattern: str) -> bool:
    """Glob-match a claim value; a list matches when any of its items does."""
    if isinstance(value, list):
        return any(_glob(item, pattern) for item in value)
    text = _scalar_text(value)
    return text is not None and fnmatchcase(text, pattern)


def _scalar_text(value: object) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"  # as written in the token's JSON
    if isinstance(value, str | int | float):
        return str(value)
    return None


def _in_groups(claims: Mapping[str, Any], groups: Sequence[str]) -> bool:
    """Any-of, exact: group ids are opaque (Entra GUIDs), never patterns."""
    held: set[str] = set()
    for name in _GROUP_CLAIMS:
        value = claims.get(name)
        values = [value] if isinstance(value, str) else value
        if isinstance(values, list):
            held.update(v for v in values if isinstance(v, str))
    return any(group in held for group in groups)


def bindings_from_config(entries: Sequence[Mapping[str, Any]]) -> list[Binding]:
    """Bindings from config dicts; ConfigError naming the entry and key that is wrong.

    bindings_from_config([{"role": "reader", "workspaces": "*", "groups": ["sre"]}])
    """
    if isinstance(entries, str | bytes) or not isinstance(entries, Sequence):
        raise ConfigError("bindings must be a list of mappings")
    return [_binding_from_config(index, entry) for index, entry in enumerate(entries)]


def _binding_from_config(index: int, entry: object) -> Binding:
    where = f"bindings[{index}]"
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where} must be a mapping with role, workspaces and a matcher")
    unknown = sorted(set(entry) - set(_BINDING_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; use {', '.join(_BINDING_KEYS)}")
    for key in ("role", "workspaces"):
        if not isinstance(entry.get(key), str) or not entry[key].strip():
            raise ConfigError(f"{where}.{key} is required and must be a non-empty string")
    for key in ("subject", "issuer"):
        if key in entry and (not isinstance(entry[key], str) or not entry[key]):
            raise ConfigError(f"{where}.{key} must be a non-empty string")
    try:
        role = Role.parse(entry["role"])
    except ConfigError as exc:
        raise ConfigError(f"{where}.role: {exc}") from None
    try:
        return Binding(
            role=role,
            workspaces=entry["workspaces"],
            subject=entry.get("subject"),
            issuer=entry.get("issuer"),
            groups=_groups_from_config(where, entry.get("groups", ())),
            claims=_claims_from_config(where, entry.get("claims", {})),
        )
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _groups_from_config(where: str, groups: object) -> tuple[str, ...]:
    values = [groups] if isinstance(groups, str) else groups
    if not isinstance(values, list | tuple) or not all(isinstance(g, str) and g for g in values):
        raise ConfigError(f"{where}.groups must be a list of group names or ids")
    return tuple(values)


def _claims_from_config(where: str, claims: object) -> dict[str, str]:
    if not isinstance(claims, Mapping):
        raise ConfigError(f"{where}.claims must be a mapping of claim name to glob")
    for name, pattern in claims.items():
        if not isinstance(name, str) or not isinstance(pattern, str) or not pattern:
            raise ConfigError(
                f"{where}.claims.{name} must be a non-empty string glob (quote numbers and "
                'booleans: "true", "42")'
            )
    return dict(claims)


def grants_for(claims: Mapping[str, Any], bindings: Sequence[Binding]) -> tuple[Grant, ...]:
    """The grants of every binding the claims match, in binding order, without duplicates."""
    grants = (binding.grant for binding in bindings if binding.matches(claims))
    return tuple(dict.fromkeys(grants))


def safe_claims(claims: Mapping[str, Any]) -> dict[str, Any]:
    """The audit-safe subset: names in SAFE_CLAIMS with scalar or list-of-scalar values."""
    return {name: value for name, value in claims.items() if name in SAFE_CLAIMS and _plain(value)}


def _plain(value: object) -> bool:
    if isinstance(value, list):
        return all(_scalar_text(item) is not None for item in value)
    return value is None or _scalar_text(value) is not None


def kubernetes_claims(claims: Mapping[str, Any]) -> dict[str, str]:
    """The pod a Kubernetes service-account token is bound to, as the flat claim
    ``kubernetes_pod`` (the nested ``kubernetes.io`` object is not an audit-safe claim)."""
    nested = claims.get("kubernetes.io")
    pod = nested.get("pod") if isinstance(nested, Mapping) else None
    name = pod.get("name") if isinstance(pod, Mapping) else None
    return {"kubernetes_pod": name} if isinstance(name, str) and name else {}


def principal_from_claims(claims: Mapping[str, Any], bindings: Sequence[Binding]) -> Principal:
    """The principal for verified OIDC claims (from ``OidcVerifier.verify``).

    A principal with no grants is still returned: ``require`` then says what is missing.
    """
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise AuthError("the token has no 'sub' claim: the issuer must name the subject")
    return Principal(
        subject=subject,
        kind="oidc",
        grants=grants_for(claims, bindings),
        claims={**safe_claims(claims), **kubernetes_claims(claims)},
    )
