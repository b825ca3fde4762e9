"""SMART on FHIR scopes (App Launch 2.2.0, v2 with v1 accepted), with no framework dependency.

Grammar handled (see kap-fhir-reference.md §5.1)::

    <context>/<ResourceType|*>.<permissions>[?<param>=<value>[&...]]

* ``context`` is ``system``, ``user`` or ``patient``.
* v2 permissions are a non-empty subset of ``c r u d s`` written in that order (``rs``, ``cud``, ``cruds``).
* v1 permissions ``read`` / ``write`` / ``*`` are translated to ``rs`` / ``cud`` / ``cruds``.
* A v2 scope may carry search-parameter constraints after ``?``. They are kept on the :class:`Scope`, but a
  constrained scope never grants *unconstrained* access: :meth:`ScopeSet.allows` ignores it.

Policy choices (deliberately conservative for a service holding mental-health records):

* ``patient/`` scopes need a patient launch context that this service does not have (backend services only),
  so by default they grant nothing; pass ``contexts=("system", "user", "patient")`` to change that.
* Strings that are not resource scopes (``openid``, ``offline_access``, ``launch/patient``, typos) are kept in
  :attr:`ScopeSet.other` and grant nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

INTERACTIONS = "cruds"
"""The five v2 interactions, in canonical order: create, read, update, delete, search."""

DEFAULT_GRANTING_CONTEXTS = ("system", "user")

_V1_PERMISSIONS = {"read": "rs", "write": "cud", "*": "cruds"}
_V2_PERMISSIONS = re.compile(r"^c?r?u?d?s?$")
_RESOURCE_TYPE = re.compile(r"^(\*|[A-Z][A-Za-z]{0,63})$")
_SCOPE = re.compile(r"^(?P<context>system|user|patient)/(?P<type>[^./?]+)\.(?P<perm>[^?]+)(?:\?(?P<query>.*))?$")
_CONSTRAINT_PART = re.compile(r"^[A-Za-z0-9_.:\-]+=[^&\s]+$")


class InvalidScopeError(ValueError):
    """A string that looks like a resource scope but is malformed."""


@dataclass(frozen=True)
class Scope:
    """One parsed resource scope. ``permissions`` is a canonical v2 string such as ``"rs"``."""

    context: str
    resource_type: str  # a FHIR type name or "*"
    permissions: str
    constraints: tuple[tuple[str, str], ...] = ()
    version: int = 2
    raw: str = ""

    @property
    def constrained(self) -> bool:
        return bool(self.constraints)

    def covers(self, resource_type: str, interaction: str) -> bool:
        """True if this scope, ignoring context and constraints, names the type and the interaction."""
        return interaction in self.permissions and self.resource_type in ("*", resource_type)

    def to_v2(self) -> str:
        """The canonical v2 spelling (v1 scopes are translated)."""
        text = f"{self.context}/{self.resource_type}.{self.permissions}"
        if self.constraints:
            text += "?" + "&".join(f"{k}={v}" for k, v in self.constraints)
        return text

    def __str__(self) -> str:
        return self.raw or self.to_v2()


def _canonical_permissions(chars: Iterable[str]) -> str:
    present = set(chars)
    return "".join(c for c in INTERACTIONS if c in present)


def parse_scope(text: str) -> Scope | None:
    """Parse one scope string.

    Returns ``None`` for strings that are not resource scopes (``openid``, ``launch/patient``...), and raises
    :class:`InvalidScopeError` for a resource scope that is malformed (``system/Observation.rx``).
    """
    m = _SCOPE.match(text)
    if m is None:
        if re.match(r"^(system|user|patient)/", text):
            raise InvalidScopeError(f"malformed scope: {text!r}")
        return None
    context, rtype, perm, query = m["context"], m["type"], m["perm"], m["query"]
    if not _RESOURCE_TYPE.match(rtype):
        raise InvalidScopeError(f"bad resource type in scope: {text!r}")
    if perm in _V1_PERMISSIONS:
        if query is not None:
            raise InvalidScopeError(f"v1 scopes take no constraints: {text!r}")
        return Scope(context, rtype, _V1_PERMISSIONS[perm], (), 1, text)
    if not perm or not _V2_PERMISSIONS.match(perm):
        raise InvalidScopeError(f"bad permissions in scope: {text!r}")
    constraints: tuple[tuple[str, str], ...] = ()
    if query is not None:
        parts = query.split("&")
        if not all(_CONSTRAINT_PART.match(p) for p in parts):
            raise InvalidScopeError(f"bad constraint in scope: {text!r}")
        pairs = (p.split("=", 1) for p in parts)
        constraints = tuple(sorted((k, v) for k, v in pairs))
    return Scope(context, rtype, perm, constraints, 2, text)


@dataclass(frozen=True)
class Requirement:
    """What a request needs: ``interaction`` on every type in ``resource_types``."""

    interaction: str
    resource_types: tuple[str, ...]

    def scope_strings(self, context: str = "system") -> list[str]:
        """The v2 scopes that would satisfy this requirement, e.g. for an error message."""
        return [f"{context}/{t}.{self.interaction}" for t in self.resource_types]


_METHOD_INTERACTION = {"POST": "c", "PUT": "u", "PATCH": "u", "DELETE": "d"}


def requirement_for(method: str, resource_types: Iterable[str], *, item: bool = False) -> Requirement:
    """The permission a route needs.

    GET/HEAD on an item (``item=True``) -> ``r``; GET/HEAD on a list or search -> ``s``; POST -> ``c``;
    PUT/PATCH -> ``u``; DELETE -> ``d``. A route touching several types needs the permission on each.
    OPTIONS and unknown methods raise ``ValueError`` (the caller decides what is public).
    """
    m = method.upper()
    if m in ("GET", "HEAD"):
        interaction = "r" if item else "s"
    elif m in _METHOD_INTERACTION:
        interaction = _METHOD_INTERACTION[m]
    else:
        raise ValueError(f"no SMART interaction for HTTP method {method!r}")
    types = tuple(dict.fromkeys(resource_types))
    if not types:
        raise ValueError("a route must declare at least one resource type")
    for t in types:
        if t == "*" or not _RESOURCE_TYPE.match(t):
            raise ValueError(f"bad resource type {t!r}")
    return Requirement(interaction, types)


@dataclass(frozen=True)
class ScopeSet:
    """The resource scopes of a token (plus any other scope strings, which grant nothing)."""

    scopes: tuple[Scope, ...] = ()
    other: tuple[str, ...] = ()
    invalid: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def parse(cls, value: str | Iterable[str] | None, *, strict: bool = False) -> ScopeSet:
        """Parse a space-separated scope string (OAuth ``scope``) or a list (``scp``).

        With ``strict=True`` a malformed resource scope raises :class:`InvalidScopeError`; otherwise it is kept in
        :attr:`invalid` and grants nothing.
        """
        if value is None:
            items: list[str] = []
        elif isinstance(value, str):
            items = value.split()
        else:
            items = [s for v in value for s in str(v).split()]
        scopes: list[Scope] = []
        other: list[str] = []
        invalid: list[str] = []
        for item in dict.fromkeys(items):
            try:
                parsed = parse_scope(item)
            except InvalidScopeError:
                if strict:
                    raise
                invalid.append(item)
                continue
            if parsed is None:
                other.append(item)
            else:
                scopes.append(parsed)
        return cls(tuple(scopes), tuple(other), tuple(invalid))

    def __bool__(self) -> bool:
        return bool(self.scopes)

    def __iter__(self):
        return iter(self.scopes)

    def __len__(self) -> int:
        return len(self.scopes)

    def allows(
        self,
        resource_type: str,
        interaction: str,
        *,
        contexts: Iterable[str] = DEFAULT_GRANTING_CONTEXTS,
    ) -> bool:
        """True if an unconstrained scope in one of ``contexts`` grants ``interaction`` on ``resource_type``."""
        if len(interaction) != 1 or interaction not in INTERACTIONS:
            raise ValueError(f"interaction must be one of {INTERACTIONS!r}, got {interaction!r}")
        ctx = tuple(contexts)
        return any(s.context in ctx and not s.constrained and s.covers(resource_type, interaction) for s in self.scopes)

    def missing(self, requirement: Requirement, *, contexts: Iterable[str] = DEFAULT_GRANTING_CONTEXTS) -> list[str]:
        """The resource types of ``requirement`` this set does not grant (empty list = allowed)."""
        ctx = tuple(contexts)
        return [t for t in requirement.resource_types if not self.allows(t, requirement.interaction, contexts=ctx)]

    def satisfies(self, requirement: Requirement, *, contexts: Iterable[str] = DEFAULT_GRANTING_CONTEXTS) -> bool:
        return not self.missing(requirement, contexts=contexts)

    def intersect(self, allowed: ScopeSet) -> ScopeSet:
        """The part of this (requested) set that ``allowed`` permits, as canonical v2 scopes.

        ``system/*.rs`` requested with ``system/Observation.cruds`` allowed gives ``system/Observation.rs``.
        Contexts must match. Constraints: if one side is constrained the result keeps its constraints; if
        both are, the result is kept only when they are identical. Non-resource scopes are dropped.
        """
        out: dict[str, Scope] = {}
        for req in self.scopes:
            for al in allowed.scopes:
                if req.context != al.context:
                    continue
                if req.resource_type == "*":
                    rtype = al.resource_type
                elif al.resource_type in ("*", req.resource_type):
                    rtype = req.resource_type
                else:
                    continue
                perms = _canonical_permissions(set(req.permissions) & set(al.permissions))
                if not perms:
                    continue
                if req.constraints and al.constraints and req.constraints != al.constraints:
                    continue
                constraints = req.constraints or al.constraints
                s = Scope(req.context, rtype, perms, constraints, 2)
                out.setdefault(s.to_v2(), s)
        return ScopeSet(tuple(out.values()))

    def to_string(self) -> str:
        """Space-separated canonical v2 scopes (the ``scope`` of a token we issue)."""
        return " ".join(s.to_v2() for s in self.scopes)

    def __str__(self) -> str:
        return self.to_string()
