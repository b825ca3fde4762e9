"""Profiles: which ones apply to a resource, and the check of a core profile's differential.

A profile applies only when asked for: declared in ``meta.profile`` or named by the ``profile`` parameter of
``$validate``. One exception, from the specification itself: R4 requires an Observation whose code is one of the
vital-sign LOINC codes to conform to the matching core vital-signs profile (R4 §8.1.1 "Vital Signs"), and the
reference validator applies it; so does kapfhir.

Known profiles: the core profiles (vitalsigns, bp, bodyweight, ... from profiles-others.json) checked by their
differential (cardinality, fixed and pattern values, value-discriminated slices, constraints, type choices); US Core
6.1.0 (``us_core``), checked as the base resource plus the constraints each profile adds; kapfhir's own
(mappings/conformance), checked by the kapfhir profile layer. An unknown profile is reported as the reference
validator reports it: a warning for ``meta.profile`` ("has not been checked because it is unknown"), an error for the
``profile`` parameter (the caller asked for a validation that cannot be made).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

from validation import base
from validation import us_core as uc
from validation.definitions import CORE, Definitions, Profile, load
from validation.issues import Issue

LOINC = "http://loinc.org"


@dataclass(frozen=True)
class Claim:
    url: str
    kind: str  # core | us-core | kapfhir | base | unknown
    asked: bool  # named by the profile parameter (not only declared in meta.profile)


def classify(url: str, rtype: str, kap_profiles: frozenset[str], asked: bool) -> Claim:
    canonical = url.split("|", 1)[0]
    defs = load()
    if canonical == f"{CORE}{rtype}":
        return Claim(canonical, "base", asked)
    if canonical in defs.profiles and defs.profiles[canonical].type == rtype:
        return Claim(canonical, "core", asked)
    if canonical.startswith(uc.BASE) and canonical[len(uc.BASE) :] in uc.PROFILES:
        kind = "us-core" if uc.PROFILES[canonical[len(uc.BASE) :]] == rtype else "wrong-type"
        return Claim(canonical, kind, asked)
    if canonical in defs.profiles and defs.profiles[canonical].type != rtype:
        return Claim(canonical, "wrong-type", asked)
    if canonical in kap_profiles:
        return Claim(canonical, "kapfhir", asked)
    return Claim(canonical, "unknown", asked)


def unknown_issue(claim: Claim, where: str) -> Issue:
    if claim.kind == "wrong-type":
        return Issue("error", "invalid", where, f"The profile '{claim.url}' is for another resource type")
    if claim.asked:
        return Issue(
            "error",
            "not-supported",
            where,
            f"Unable to resolve the profile '{claim.url}': kapfhir "
            "knows the R4 core profiles, US Core 6.1.0 and its own profiles",
        )
    return Issue(
        "warning", "not-found", where, f"Profile reference '{claim.url}' has not been checked because it is unknown"
    )


@cache
def vital_sign_profiles() -> dict[str, str]:
    """LOINC code -> core vital-signs profile URL (the fixed code of each profile's code slice)."""
    out: dict[str, str] = {}
    for url, profile in load().profiles.items():
        if profile.type != "Observation" or not _derives_from(profile, f"{CORE}vitalsigns"):
            continue
        for el in profile.differential:
            eid = el.get("id", "")
            if eid.startswith("Observation.code.coding:") and eid.endswith(".code") and el.get("fixedCode"):
                out[el["fixedCode"]] = url
    return out


def _derives_from(profile: Profile, ancestor: str) -> bool:
    defs = load()
    seen = 0
    while profile is not None and seen < 10:
        if profile.url == ancestor:
            return True
        profile = defs.profiles.get(profile.base)  # type: ignore[assignment]
        seen += 1
    return False


def required_vital_profile(resource: dict) -> str | None:
    if resource.get("resourceType") != "Observation" or not isinstance(resource.get("code"), dict):
        return None
    table = vital_sign_profiles()
    codings = resource["code"].get("coding")
    for coding in codings if isinstance(codings, list) else []:
        code = coding.get("code") if isinstance(coding, dict) else None
        if isinstance(code, str) and coding.get("system") == LOINC and code in table:
            return table[coding["code"]]
    return None


# --- a core profile's differential ------------------------------------------------------------------------------


def check_core_profile(resource: dict, url: str, where: str) -> list[Issue]:
    """The resource against a core profile and the profiles it derives from (their differentials)."""
    defs = load()
    issues: list[Issue] = []
    seen: set[str] = set()
    profile = defs.profiles.get(url)
    while profile is not None and profile.url not in seen:
        seen.add(profile.url)
        issues += _differential(resource, profile, where, defs)
        profile = defs.profiles.get(profile.base)
    return issues


def _segments(eid: str) -> list[tuple[str, str | None]]:
    out = []
    for part in eid.split(".")[1:]:
        name, _, slice_name = part.partition(":")
        out.append((name, slice_name or None))
    return out


def _children(value: Any, name: str) -> list[tuple[str, Any]]:
    """(json key, item) of one element name under a node (choice names match every type)."""
    if not isinstance(value, dict):
        return []
    keys = (
        [name]
        if not name.endswith("[x]")
        else [k for k in value if k.startswith(name[:-3]) and k[len(name) - 3 :][:1].isupper()]
    )
    out = []
    for key in keys:
        item = value.get(key)
        if isinstance(item, list):
            out += [(f"{key}[{i}]", x) for i, x in enumerate(item)]
        elif item is not None:
            out.append((key, item))
    return out


def _fixed(el: dict) -> tuple[str, Any] | None:
    for key, value in el.items():
        if key.startswith(("fixed", "pattern")):
            return key, value
    return None


def _matches(value: Any, pattern: Any) -> bool:
    """FHIR pattern matching: every property of the pattern is in the value (arrays: each pattern item matched)."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(_matches(value.get(k), v) for k, v in pattern.items())
    if isinstance(pattern, list):
        items = value if isinstance(value, list) else [value]
        return all(any(_matches(x, p) for x in items) for p in pattern)
    return value == pattern


def _nodes(value: Any, rel: list[tuple[str, str | None]]) -> Iterator[Any]:
    if not rel:
        yield value
        return
    (name, _), rest = rel[0], rel[1:]
    for _, item in _children(value, name):
        yield from _nodes(item, rest)


@cache
def _prepared(url: str) -> tuple[list[dict], dict[str, dict], dict[str, list], set[str]]:
    """A profile's differential ready to check, once per process: its elements, the slicing of each sliced element,
    the rules that select each slice (discriminator path, value) and the elements those rules come from."""
    profile = load().profiles[url]
    elements = [el for el in profile.differential if "." in el.get("id", el.get("path", ""))]
    slicing = {el["id"]: el["slicing"] for el in profile.differential if el.get("slicing") and "id" in el}
    matchers: dict[str, list] = {}
    discriminating: set[str] = set()
    for slice_id, members in _slices(elements).items():
        owner = slice_id.rsplit(":", 1)[0]
        paths = {d.get("path") for d in slicing.get(owner, {}).get("discriminator", [])}
        matchers[slice_id] = _slice_rules(slice_id, members, paths, discriminating)
    return elements, slicing, matchers, discriminating


def _slices(elements: list[dict]) -> dict[str, list[dict]]:
    """Slice id (``Observation.code.coding:loinc``) -> the elements inside it."""
    slices: dict[str, list[dict]] = {}
    for el in elements:
        segs = el["id"].split(".")
        for i, part in enumerate(segs):
            if ":" in part:
                slices.setdefault(".".join(segs[: i + 1]), []).append(el)
    return slices


def _slice_rules(slice_id: str, members: list[dict], paths: set, discriminating: set[str]) -> list:
    """(path, value) rules an item must match to be in the slice: the fixed and pattern values of its discriminator
    paths (every fixed value when the slicing names none); the elements they come from join ``discriminating``."""
    rules = []
    for el in members:
        fixed = _fixed(el)
        if fixed is None or el["id"] == slice_id:
            continue
        plain = ".".join(p.split(":")[0] for p in el["id"][len(slice_id) + 1 :].split("."))
        if not paths or plain in paths:
            rules.append(([(p, None) for p in plain.split(".")], fixed[1]))
            discriminating.add(el["id"])
    return rules


def _differential(resource: dict, profile: Profile, where: str, defs: Definitions) -> list[Issue]:
    check = _DifferentialCheck(resource, profile, where)
    for el in check.elements:
        check.element(el)
    return _root_constraints(resource, profile, where, check.issues)


class _DifferentialCheck:
    """One resource against the elements of one profile's differential: cardinality (of slices too), type choices,
    fixed and pattern values, constraints."""

    def __init__(self, resource: dict, profile: Profile, where: str) -> None:
        self.resource = resource
        self.profile = profile
        self.where = where
        self.elements, _slicing, self.matchers, self.discriminating = _prepared(profile.url)
        self.source = f"(from {profile.url})"
        self.issues: list[Issue] = []

    def in_slice(self, item: Any, slice_id: str) -> bool:
        rules = self.matchers.get(slice_id, [])
        return bool(rules) and all(any(_matches(n, v) for n in _nodes(item, rel)) for rel, v in rules)

    def parents(self, segs: list[tuple[str, str | None]]) -> list[tuple[str, Any]]:
        """(expression, node) of each instance of the element path, slices filtered."""
        current: list[tuple[str, Any]] = [(self.where, self.resource)]
        prefix = self.profile.type
        for name, slice_name in segs:
            prefix = f"{prefix}.{name}"
            current = [
                (f"{expr}.{key}", item)
                for expr, node in current
                for key, item in _children(node, name)
                if slice_name is None or self.in_slice(item, f"{prefix}:{slice_name}")
            ]
            if slice_name:
                prefix = f"{prefix}:{slice_name}"
        return current

    def element(self, el: dict) -> None:
        segs = _segments(el["id"])
        name, slice_name = segs[-1]
        for expr, owner in self.parents(segs[:-1]):
            found = _children(owner, name)
            if slice_name:
                found = [(k, x) for k, x in found if self.in_slice(x, el["id"])]
            self._cardinality(el, bool(slice_name), expr, len(found))
            if name.endswith("[x]") and el.get("type"):
                self._choice_types(el, name, expr, found)
            self._fixed_value(el, expr, found)
            self._constraints(el, expr, found)

    def _cardinality(self, el: dict, sliced: bool, expr: str, count: int) -> None:
        label = el["id"]
        minimum, maximum = el.get("min"), el.get("max")
        if isinstance(minimum, int) and count < minimum:
            kind = f"Slice '{label}'" if sliced else label
            self.issues.append(
                Issue(
                    "error",
                    "structure",
                    expr,
                    f"{kind}: minimum required = {minimum}, but only found {count} {self.source}",
                )
            )
        if maximum not in (None, "*") and count > int(maximum):
            self.issues.append(
                Issue("error", "structure", expr, f"{label}: max allowed = {maximum}, but found {count} {self.source}")
            )

    def _choice_types(self, el: dict, name: str, expr: str, found: list[tuple[str, Any]]) -> None:
        allowed = {t["code"][:1].upper() + t["code"][1:] for t in el["type"]}
        for key, _ in found:
            suffix = key.split("[")[0][len(name) - 3 :]
            if suffix not in allowed:
                self.issues.append(
                    Issue(
                        "error",
                        "structure",
                        f"{expr}.{key}",
                        f"{el['id']}: the type {suffix} "
                        f"is not allowed (allowed: {', '.join(sorted(allowed))}) {self.source}",
                    )
                )

    def _fixed_value(self, el: dict, expr: str, found: list[tuple[str, Any]]) -> None:
        fixed = _fixed(el)
        if fixed is None or el["id"] in self.discriminating:
            return
        for key, item in found:
            if not _matches(item, fixed[1]) if fixed[0].startswith("pattern") else item != fixed[1]:
                self.issues.append(
                    Issue("error", "value", f"{expr}.{key}", f"{el['id']}: value must be {fixed[1]!r} {self.source}")
                )

    def _constraints(self, el: dict, expr: str, found: list[tuple[str, Any]]) -> None:
        for constraint in el.get("constraint", []) or []:
            expression = constraint.get("expression")
            if not expression or constraint.get("key") in ("ele-1",):
                continue
            for key, item in found:
                node = item if isinstance(item, dict) else {"value": item}
                ok = base.holds(expression, node, el.get("path", el["id"]).replace("[x]", ""), self.resource)
                if ok is False:
                    self.issues.append(
                        Issue(
                            constraint.get("severity", "error"),
                            "invariant",
                            f"{expr}.{key}",
                            f"Constraint failed: {constraint['key']}: '{constraint.get('human', '')}' {self.source}",
                        )
                    )


def _root_constraints(resource: dict, profile: Profile, where: str, issues: list[Issue]) -> list[Issue]:
    for el in profile.differential:
        if "." in el.get("id", "."):
            continue
        for constraint in el.get("constraint", []) or []:
            expression = constraint.get("expression")
            if not expression:
                continue
            if base.holds(expression, resource, profile.type, resource) is False:
                issues.append(
                    Issue(
                        constraint.get("severity", "error"),
                        "invariant",
                        where,
                        f"Constraint failed: {constraint['key']}: '{constraint.get('human', '')}' (from {profile.url})",
                    )
                )
    return issues


# --- US Core ---------------------------------------------------------------------------------------------------


def check_us_core(resource: dict, url: str, where: str) -> list[Issue]:
    """A claimed US Core 6.1.0 profile: the constraints it adds (its base is the core resource, checked anyway)."""
    issues: list[Issue] = []
    pid = url[len(uc.BASE) :]
    for eid, key, severity, expression, human in uc.US_CORE_INVARIANTS.get(pid, ()):
        segs = _segments(eid)
        targets = [(where, resource)] if not segs else _instances(resource, segs, where)
        for expr, node in targets:
            if not isinstance(node, dict):
                node = {"value": node}
            ok = base.holds(expression, node, eid.split(":")[0], resource)
            if ok is False:
                issues.append(Issue(severity, "invariant", expr, f"Constraint failed: {key}: '{human}' (from {url})"))
    issues.append(
        Issue(
            "information",
            "informational",
            where,
            f"{url}: checked the base resource and the "
            f"constraints US Core {uc.VERSION} adds; its slices, must-support elements and "
            "terminology bindings were not checked",
        )
    )
    return issues


def _instances(resource: dict, segs: list[tuple[str, str | None]], where: str) -> list[tuple[str, Any]]:
    current: list[tuple[str, Any]] = [(where, resource)]
    for name, slice_name in segs:
        if slice_name:
            return []  # slice-specific constraints (NPI, CLIA identifiers): slices are not checked
        current = [(f"{expr}.{key}", item) for expr, node in current for key, item in _children(node, name)]
    return current
