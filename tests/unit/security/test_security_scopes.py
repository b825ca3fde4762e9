from __future__ import annotations

import pytest

from service.security.scopes import InvalidScopeError, ScopeSet, parse_scope, requirement_for


@pytest.mark.parametrize(
    ("text", "context", "rtype", "perms", "version"),
    [
        ("system/Observation.rs", "system", "Observation", "rs", 2),
        ("user/*.cruds", "user", "*", "cruds", 2),
        ("patient/Patient.r", "patient", "Patient", "r", 2),
        ("system/MedicationAdministration.c", "system", "MedicationAdministration", "c", 2),
        ("system/Observation.read", "system", "Observation", "rs", 1),
        ("system/Observation.write", "system", "Observation", "cud", 1),
        ("user/*.*", "user", "*", "cruds", 1),
        ("system/*.read", "system", "*", "rs", 1),
    ],
)
def test_parse_v1_and_v2(text: str, context: str, rtype: str, perms: str, version: int) -> None:
    s = parse_scope(text)
    assert s is not None
    assert (s.context, s.resource_type, s.permissions, s.version) == (context, rtype, perms, version)
    assert not s.constrained


def test_v1_translates_to_v2_spelling() -> None:
    assert parse_scope("system/Observation.write").to_v2() == "system/Observation.cud"
    assert parse_scope("user/*.*").to_v2() == "user/*.cruds"


def test_constraints_kept() -> None:
    s = parse_scope(
        "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory"
    )
    assert s is not None and s.constrained
    assert s.constraints == (("category", "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"),)


@pytest.mark.parametrize(
    "text",
    [
        "system/Observation.sr",  # wrong order
        "system/Observation.rr",
        "system/Observation.x",
        "system/Observation.",
        "system/observation.rs",  # types start upper-case
        "system/Observation",
        "system/Observation.read?category=x",  # v1 has no constraints
        "system/Observation.rs?category",  # constraint without value
    ],
)
def test_malformed_resource_scopes(text: str) -> None:
    with pytest.raises(InvalidScopeError):
        parse_scope(text)
    parsed = ScopeSet.parse(text)
    assert text in parsed.invalid and not parsed
    with pytest.raises(InvalidScopeError):
        ScopeSet.parse(text, strict=True)


def test_non_resource_scopes_grant_nothing() -> None:
    s = ScopeSet.parse("openid fhirUser launch/patient offline_access")
    assert not s
    assert s.other == ("openid", "fhirUser", "launch/patient", "offline_access")
    assert parse_scope("openid") is None


def test_allows_v2() -> None:
    s = ScopeSet.parse("system/Observation.rs system/Patient.r")
    assert s.allows("Observation", "r")
    assert s.allows("Observation", "s")
    assert not s.allows("Observation", "c")
    assert s.allows("Patient", "r")
    assert not s.allows("Patient", "s")
    assert not s.allows("Encounter", "r")


def test_allows_wildcard_and_v1() -> None:
    s = ScopeSet.parse("system/*.read user/Observation.write")
    for t in ("Patient", "Observation", "AuditEvent"):
        assert s.allows(t, "r") and s.allows(t, "s")
        assert not s.allows(t, "d") or t == "Observation"
    assert s.allows("Observation", "c") and s.allows("Observation", "u") and s.allows("Observation", "d")
    assert not s.allows("Patient", "c")
    full = ScopeSet.parse("system/*.cruds")
    assert all(full.allows("Encounter", i) for i in "cruds")


def test_constrained_and_patient_scopes_do_not_grant_unconstrained_access() -> None:
    constrained = ScopeSet.parse("system/Observation.rs?category=laboratory")
    assert not constrained.allows("Observation", "r")
    patient = ScopeSet.parse("patient/*.cruds")
    assert not patient.allows("Patient", "r")
    assert patient.allows("Patient", "r", contexts=("patient",))


def test_allows_rejects_unknown_interaction() -> None:
    with pytest.raises(ValueError, match="interaction"):
        ScopeSet.parse("system/*.cruds").allows("Patient", "x")


def test_scope_claim_as_list() -> None:
    s = ScopeSet.parse(["system/Observation.rs", "system/Patient.r"])
    assert s.allows("Patient", "r") and s.allows("Observation", "s")


@pytest.mark.parametrize(
    ("method", "item", "interaction"),
    [
        ("GET", True, "r"),
        ("GET", False, "s"),
        ("HEAD", True, "r"),
        ("POST", False, "c"),
        ("PUT", True, "u"),
        ("PATCH", True, "u"),
        ("DELETE", True, "d"),
        ("get", False, "s"),
    ],
)
def test_requirement_for(method: str, item: bool, interaction: str) -> None:
    assert requirement_for(method, ["Observation"], item=item).interaction == interaction


def test_requirement_for_rejects_unknown_method_and_empty_types() -> None:
    with pytest.raises(ValueError):
        requirement_for("OPTIONS", ["Patient"])
    with pytest.raises(ValueError):
        requirement_for("GET", [])


def test_route_with_several_types_needs_each() -> None:
    episode = ["EpisodeOfCare", "Encounter", "Observation", "MedicationAdministration"]
    req = requirement_for("GET", episode, item=True)
    partial = ScopeSet.parse("system/EpisodeOfCare.rs system/Encounter.rs")
    assert not partial.satisfies(req)
    assert partial.missing(req) == ["Observation", "MedicationAdministration"]
    assert ScopeSet.parse("system/*.rs").satisfies(req)
    assert ScopeSet.parse("system/*.read").satisfies(req)
    assert not ScopeSet.parse("system/*.s").satisfies(req)  # item read needs r
    assert req.scope_strings()[0] == "system/EpisodeOfCare.r"


def test_intersection() -> None:
    allowed = ScopeSet.parse("system/Observation.cruds system/Patient.rs")
    requested = ScopeSet.parse("system/*.rs system/Encounter.cruds user/*.cruds openid")
    granted = requested.intersect(allowed)
    assert granted.to_string() == "system/Observation.rs system/Patient.rs"


def test_intersection_with_wildcard_allowed_and_v1_requested() -> None:
    allowed = ScopeSet.parse("system/*.rs")
    granted = ScopeSet.parse("system/Observation.write system/Patient.read").intersect(allowed)
    assert granted.to_string() == "system/Patient.rs"


def test_intersection_keeps_constraints() -> None:
    allowed = ScopeSet.parse("system/Observation.rs?category=laboratory")
    granted = ScopeSet.parse("system/*.cruds").intersect(allowed)
    assert granted.to_string() == "system/Observation.rs?category=laboratory"
    other = ScopeSet.parse("system/Observation.rs?category=vital-signs").intersect(allowed)
    assert not other


def test_intersection_empty() -> None:
    assert not ScopeSet.parse("system/Patient.cud").intersect(ScopeSet.parse("system/*.rs"))
