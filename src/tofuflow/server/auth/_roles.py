"""Roles, permissions and the authenticated principal.

    principal.require(Permission.WRITE_STATE, "app/prod")   # ForbiddenError when not allowed
    principal.role_for("app/prod")                          # Role.PLANNER, or None

Roles are ordered (reader < planner < applier < approver < admin) and each includes the
permissions of the ones below it. A principal holds grants (a role on a workspace glob);
its role on a workspace is the highest role among the grants that match it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from fnmatch import fnmatchcase
from types import MappingProxyType
from typing import Any, Literal

from tofuflow.errors import ConfigError, ForbiddenError

__all__ = ["Grant", "Permission", "Principal", "PrincipalKind", "Role", "workspace_matches"]

# "anonymous" is for requests that carry no credential (health checks): no grants.
PrincipalKind = Literal["token", "oidc", "anonymous"]
_KINDS = ("token", "oidc", "anonymous")


class Role(StrEnum):
    """A role on a set of workspaces; compares by power, not alphabetically.

    Role.parse("Applier") > Role.PLANNER   # True
    """

    READER = "reader"
    PLANNER = "planner"
    APPLIER = "applier"
    APPROVER = "approver"
    ADMIN = "admin"

    @classmethod
    def parse(cls, value: str) -> Role:
        """``Role.parse("planner")``; ConfigError listing the valid roles otherwise."""
        try:
            return cls(value.strip().lower())
        except (ValueError, AttributeError):
            valid = ", ".join(role.value for role in cls)
            raise ConfigError(f"unknown role {value!r}: use one of {valid}") from None

    @property
    def rank(self) -> int:
        return _RANKS[self]

    @property
    def permissions(self) -> frozenset[Permission]:
        return _PERMISSIONS[self]

    # StrEnum inherits str ordering ("admin" < "reader"); roles must order by power.
    def __lt__(self, other: object) -> bool:
        return self.rank < _rank_of(other)

    def __le__(self, other: object) -> bool:
        return self.rank <= _rank_of(other)

    def __gt__(self, other: object) -> bool:
        return self.rank > _rank_of(other)

    def __ge__(self, other: object) -> bool:
        return self.rank >= _rank_of(other)


class Permission(StrEnum):
    """One action on a workspace's state."""

    READ_STATE = "read_state"
    LIST_VERSIONS = "list_versions"
    LOCK = "lock"
    WRITE_STATE = "write_state"
    UNLOCK = "unlock"  # release a lock the caller holds; the lock id check is the caller's
    FORCE_UNLOCK = "force_unlock"  # release someone else's lock
    ROLLBACK = "rollback"
    OVERRIDE = "override"  # `state push -force`, or a write that changes the lineage
    DELETE_STATE = "delete_state"
    MANAGE_TOKENS = "manage_tokens"
    READ_RUNS = "read_runs"  # runs, their plans and the audit log of the workspace
    CREATE_RUN = "create_run"  # upload a plan for policy check
    APPLY_RUN = "apply_run"  # open an apply session for an approved run
    APPROVE_RUN = "approve_run"  # approve someone else's run (a person, not a pipeline)

    @property
    def minimum_role(self) -> Role:
        """The lowest role that holds this permission (for "needs applier" messages)."""
        return min(role for role in Role if self in role.permissions)


def _rank_of(other: object) -> int:
    if not isinstance(other, Role):
        raise TypeError(f"cannot order a Role against {type(other).__name__}")
    return other.rank


_RANKS = {role: rank for rank, role in enumerate(Role)}

_READ = frozenset({Permission.READ_STATE, Permission.LIST_VERSIONS, Permission.READ_RUNS})
# Plans run with -lock=false and never write state, so a planner has a reader's state
# rights; what it adds is submitting plans to the runs API.
_PLAN = _READ | {Permission.CREATE_RUN}
_APPLY = _PLAN | {Permission.LOCK, Permission.WRITE_STATE, Permission.UNLOCK, Permission.APPLY_RUN}
_PERMISSIONS: Mapping[Role, frozenset[Permission]] = {
    Role.READER: _READ,
    Role.PLANNER: _PLAN,
    Role.APPLIER: _APPLY,
    Role.APPROVER: _APPLY | {Permission.APPROVE_RUN},
    Role.ADMIN: frozenset(Permission),
}


def workspace_matches(pattern: str, workspace: str) -> bool:
    """fnmatch-style, case-sensitive; ``*`` also matches ``/``: ``app/*`` covers ``app/eu/prod``.

    workspace_matches("app/*", "app/prod")   # True
    """
    return fnmatchcase(workspace, pattern)


@dataclass(frozen=True)
class Grant:
    """A role on the workspaces matching a glob (see ``workspace_matches``).

    Grant(Role.APPLIER, "app/*").matches("app/prod")   # True
    """

    role: Role
    workspaces: str

    def __post_init__(self) -> None:
        if not isinstance(self.role, Role):
            raise ConfigError(f"a grant needs a Role, got {self.role!r}")
        if not self.workspaces.strip():
            raise ConfigError("a grant needs a workspace pattern: use '*' for every workspace")

    def matches(self, workspace: str) -> bool:
        return workspace_matches(self.workspaces, workspace)


@dataclass(frozen=True)
class Principal:
    """Who is calling, and the grants it holds.

    ``claims`` is a safe subset for the audit log (never the raw token); ``token_id`` is
    set for API tokens.

        p = Principal("token:tfw_ab12", "token", (Grant(Role.PLANNER, "app/*"),))
        p.can(Permission.READ_STATE, "app/prod")        # True
        p.require(Permission.WRITE_STATE, "app/prod")   # ForbiddenError
    """

    subject: str
    kind: PrincipalKind
    grants: tuple[Grant, ...] = ()
    claims: Mapping[str, Any] = field(default_factory=dict, hash=False)
    token_id: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ConfigError(f"principal kind must be one of {_KINDS}, not {self.kind!r}")
        # Read-only copies: a principal is shared across a request and must not change.
        object.__setattr__(self, "grants", tuple(self.grants))
        object.__setattr__(self, "claims", MappingProxyType(dict(self.claims)))

    def role_for(self, workspace: str) -> Role | None:
        """The highest role among the grants matching ``workspace``; None without one."""
        roles = [grant.role for grant in self.grants if grant.matches(workspace)]
        return max(roles) if roles else None

    def can(self, permission: Permission, workspace: str) -> bool:
        role = self.role_for(workspace)
        return role is not None and permission in role.permissions

    def require(self, permission: Permission, workspace: str, action: str = "") -> None:
        """Raise ForbiddenError naming who, what (``action``, in words, or the permission
        on ``workspace``), where and the role needed."""
        if self.can(permission, workspace):
            return
        needed = permission.minimum_role
        has = self.role_for(workspace)
        raise ForbiddenError(
            f"{self.subject} may not {action or f'{permission} on {workspace}'}: needs {needed}, "
            f"has {has or 'no role there'}. "
            f"Ask an admin for {'an' if needed[0] in 'aeiou' else 'a'} {needed} grant or "
            f"binding on {workspace}."
        )
