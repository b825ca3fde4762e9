"""``$validate`` and the write path's checks: every problem of a resource or Bundle as OperationOutcome issues with
FHIRPath expressions.

``validate`` (POST /fhir/$validate) answers as the HL7 reference validator does: the fast layers (``validation.layers``:
structure, required bindings; the kapfhir profile rules when a kapfhir profile is claimed or asked for), the base
specification from the R4 definitions (``validation.base``), declared and required profiles (``validation.profiles``),
the constraints of kapfhir's StructureDefinitions (``validation.kapfhir_constraints``), then kapfhir's domain rules.
``validate_for_write`` (POST /fhir, PUT, PATCH) checks the entries of a write: the fast layers, reference targets
(``validation.references``), kapfhir's Questionnaires (``validation.questionnaire``), the kapfhir constraints, the
domain rules and the extension write policy (``validation.policy``).

The domain rules (mapping into the KAP domain and the safety rules) are kapfhir's, not FHIR's: the caller passes them
(``DomainRules``; the service's, with its safety policy), so that this package depends on no service module.
"""

from __future__ import annotations

import re
import typing
import uuid
from typing import Any, Protocol

from mappings import terminology as t
from validation import base as vbase
from validation import definitions, kapfhir_constraints, layers, questionnaire, references
from validation import policy as vpolicy
from validation import profiles as vprofiles
from validation.issues import Issue, dedupe, entry_index
from validation.references import known_type

KAP_PREFIX = t.SD + "/"
# kapfhir-profile invariants of the invariants layer that the base specification does not define.
_KAP_ONLY_INVARIANTS = ("us-core-8", "kap-off-label-1")


class DomainRules(Protocol):
    """kapfhir's domain rules on content that claims a kapfhir profile: a refusal of the reverse mapping is an error
    naming its element, a safety-rule deviation a warning (flagged, not refused)."""

    def bundle(self, bundle: dict) -> list[Issue]: ...

    def resource(self, resource: dict) -> list[Issue]: ...


def r4_type(name: Any) -> bool:
    """Whether ``name`` is an R4 4.0.1 resource type (every one, stored here or not)."""
    if not isinstance(name, str):
        return False
    if definitions.available():
        return name in definitions.load().resources
    return known_type(name)


# --- $validate ------------------------------------------------------------------------------------------------------


def validate(
    resource: Any,
    *,
    expected_type: str | None = None,
    profile: str | None = None,
    kap_rules: bool = False,
    domain: DomainRules | None = None,
) -> list[Issue]:
    """``$validate``: the issues the HL7 reference validator would report on ``resource`` (base specification,
    declared or asked-for profiles), then kapfhir's domain rules (``domain``) when a kapfhir profile is claimed or
    asked for, or ``kap_rules`` is set."""
    refused = _not_a_resource(resource, expected_type)
    if refused:
        return refused
    rtype = resource["resourceType"]
    if not definitions.available():
        note = Issue(
            "warning",
            "not-supported",
            rtype,
            "the FHIR R4 definitions are not installed (scripts/install-fhir-definitions.sh): only structure, "
            "required bindings and a few invariants were checked",
        )
        return [*_legacy_validate(resource, rtype, profile, domain), note]
    claims = _claims(resource, rtype, profile)
    kap = kap_rules or any(c.kind == "kapfhir" for c in claims) or (rtype == "Bundle" and _bundle_claims_kap(resource))
    issues = _fast_layers(resource, rtype, kap)
    if any(i.severity == "fatal" for i in issues):
        return dedupe(issues)
    issues += _reference_layers(resource, rtype, claims, kap)
    if kap and not any(i.severity in ("error", "fatal") for i in issues):
        issues += _domain_issues(resource, rtype, domain)
    return dedupe(issues)


def _not_a_resource(resource: Any, expected_type: str | None) -> list[Issue]:
    """The fatal issue of a body that is no R4 resource (of the expected type)."""
    if not isinstance(resource, dict):
        return [Issue("fatal", "structure", "Resource", "the body must be a JSON object (a FHIR resource)")]
    rtype = resource.get("resourceType")
    if not r4_type(rtype):
        return [Issue("fatal", "structure", "resourceType", f"unknown resourceType {rtype!r}: not an R4 resource type")]
    if expected_type and rtype != expected_type:
        return [Issue("error", "invalid", "resourceType", f"expected a {expected_type}, got {rtype}")]
    return []


def _claims(resource: dict, rtype: str, profile: str | None) -> list[vprofiles.Claim]:
    """The profiles declared in ``meta.profile`` and the one asked for, classified."""
    meta = resource.get("meta")
    declared = meta.get("profile") if isinstance(meta, dict) else None
    claims = [
        vprofiles.classify(p, rtype, kapfhir_constraints.kap_profiles(), asked=False)
        for p in (declared if isinstance(declared, list) else [])
        if isinstance(p, str)
    ]
    if profile:
        claims.append(vprofiles.classify(profile, rtype, kapfhir_constraints.kap_profiles(), asked=True))
    return claims


def _fast_layers(resource: dict, rtype: str, kap: bool) -> list[Issue]:
    """Structure and required bindings (and the kapfhir profile rules), a resource wrapped in a collection Bundle."""
    if rtype == "Bundle":
        return _layers(resource, ["structure", "bindings"] + (["profile"] if kap else []), "Bundle", "Bundle")
    return _layers(_wrapped(resource), ["structure", "bindings"] + (["profile"] if kap else []), _ENTRY, rtype)


_ENTRY = "Bundle.entry[0].resource"


def _wrapped(resource: dict, full_url: str | None = None) -> dict:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": full_url or f"urn:uuid:{uuid.uuid4()}", "resource": resource}],
    }


def _reference_layers(resource: dict, rtype: str, claims: list[vprofiles.Claim], kap: bool) -> list[Issue]:
    """The base specification, profiles and kapfhir constraints, and the notes on what was not checked."""
    unchecked: set[str] = set()

    def base_layer() -> list[Issue]:
        found, missed = vbase.check(resource, rtype)
        unchecked.update(missed)
        return found

    issues = _guarded("base specification", rtype, base_layer)
    issues += _guarded("profile", rtype, lambda: _all_profile_issues(resource, rtype, claims))
    issues += _guarded("extension constraint", rtype, lambda: _extension_constraints(resource, rtype))
    if kap:
        issues += _guarded("kapfhir invariant", rtype, lambda: _kap_invariants(resource, rtype))
    if unchecked:
        issues.append(
            Issue(
                "information",
                "informational",
                rtype,
                "Invariants not evaluated (FHIRPath functions the engine "
                f"lacks, such as resolve() or conformsTo()): {', '.join(sorted(unchecked))}",
            )
        )
    if _has_external_codes(resource):
        issues.append(Issue("information", "informational", rtype, vbase.TERMINOLOGY_NOTE))
    return issues


def _domain_issues(resource: dict, rtype: str, domain: DomainRules | None) -> list[Issue]:
    """The domain rules: a Bundle's when it carries an episode, a single resource's otherwise."""
    if domain is None:
        return []
    if rtype != "Bundle":
        return domain.resource(resource)
    if any(
        isinstance(e, dict)
        and isinstance(e.get("resource"), dict)
        and e["resource"].get("resourceType") == "EpisodeOfCare"
        for e in resource.get("entry") or []
    ):
        return domain.bundle(resource)
    return []


def _guarded(layer: str, root: str, run: typing.Callable[[], list[Issue]]) -> list[Issue]:
    """A layer's issues; content too broken for it (fhirkit has reported why) gives a warning, never a 500."""
    try:
        return run()
    except (TypeError, AttributeError, KeyError, ValueError, IndexError, RecursionError) as exc:
        return [
            Issue(
                "warning", "exception", root, f"the {layer} checks could not run on this content: {type(exc).__name__}"
            )
        ]


def _bundle_claims_kap(bundle: dict) -> bool:
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        meta = resource.get("meta") if isinstance(resource, dict) else None
        if isinstance(meta, dict) and any(str(p).startswith(KAP_PREFIX) for p in meta.get("profile") or []):
            return True
    return False


def _all_profile_issues(resource: dict, rtype: str, claims: list[vprofiles.Claim]) -> list[Issue]:
    """The profiles of the resource and, in a Bundle, those its entries declare."""
    out = _profile_issues(resource, rtype, rtype, claims)
    entries = resource.get("entry") if rtype == "Bundle" else None
    for i, entry in enumerate(entries if isinstance(entries, list) else []):
        if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
            inner = entry["resource"]
            out += _profile_issues(inner, inner.get("resourceType"), f"Bundle.entry[{i}].resource", None)
    return out


def _profile_issues(resource: dict, rtype: Any, where: str, claims: list | None) -> list[Issue]:
    """Declared (and asked-for) profiles of one resource, and the vital-signs profile R4 requires."""
    if not isinstance(rtype, str):
        return []
    if claims is None:
        meta = resource.get("meta")
        claims = [
            vprofiles.classify(p, rtype, kapfhir_constraints.kap_profiles(), asked=False)
            for p in (meta.get("profile") or [] if isinstance(meta, dict) else [])
            if isinstance(p, str)
        ]
    core = {c.url for c in claims if c.kind == "core"}
    vital = vprofiles.required_vital_profile(resource)
    if vital:
        core.add(vital)
    issues: list[Issue] = []
    for url in sorted(core):
        issues += vprofiles.check_core_profile(resource, url, where)
    for claim in claims:
        issues += _claim_issues(resource, claim, where)
    return issues


def _claim_issues(resource: dict, claim: vprofiles.Claim, where: str) -> list[Issue]:
    if claim.kind == "us-core":
        return vprofiles.check_us_core(resource, claim.url, where)
    if claim.kind in ("unknown", "wrong-type"):
        at = "Parameters.parameter.profile" if claim.asked else f"{where}.meta.profile"
        return [vprofiles.unknown_issue(claim, at)]
    return []


def _extension_constraints(resource: dict, rtype: str) -> list[Issue]:
    """Constraints our extension definitions declare (they apply wherever the extension is used), and those of a
    claimed kapfhir profile."""
    if rtype != "Bundle":
        return kapfhir_constraints.check(resource, rtype)
    issues = []
    for i, entry in enumerate(resource.get("entry") or []):
        if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
            issues += kapfhir_constraints.check(entry["resource"], f"Bundle.entry[{i}].resource")
    return issues


def _kap_invariants(resource: dict, rtype: str) -> list[Issue]:
    bundle = resource if rtype == "Bundle" else _wrapped(resource, "urn:uuid:x")
    prefix, root = ("Bundle", "Bundle") if rtype == "Bundle" else (_ENTRY, rtype)
    sd_keys = kapfhir_constraints.sd_keys()
    found = [
        i
        for i in layers.check_invariants(bundle)
        if i.diagnostics.split(":")[0] in _KAP_ONLY_INVARIANTS and i.diagnostics.split(":")[0] not in sd_keys
    ]
    return _rebase(found, prefix, root)


def _has_external_codes(resource: dict) -> bool:
    """Whether the resource carries codes of code systems outside FHIR's own (their terminology is not checked)."""
    stack: list[Any] = [resource]
    budget = 100_000
    while stack and budget:
        budget -= 1
        value = stack.pop()
        if isinstance(value, dict):
            if _external_code(value):
                return True
            stack.extend(x for x in value.values() if isinstance(x, dict | list))
        elif isinstance(value, list):
            stack.extend(x for x in value if isinstance(x, dict | list))
    return False


def _external_code(value: dict) -> bool:
    system = value.get("system")
    return (
        isinstance(system, str)
        and "code" in value
        and not system.startswith(("http://hl7.org/fhir", "http://terminology.hl7.org", "urn:ietf:bcp:"))
    )


def _legacy_validate(resource: dict, rtype: str, profile: str | None, domain: DomainRules | None) -> list[Issue]:
    """Without the R4 definitions: the fast layers alone (structure, bindings, invariants) and the write path's
    checks."""
    if rtype == "Bundle":
        return _validate_bundle(resource, profile, domain)
    return dedupe(
        _layers(_wrapped(resource), ["structure", "bindings", "invariants"], _ENTRY, rtype)
        + _own_checks(resource, rtype)
    )


# --- the write path ---------------------------------------------------------------------------------------------


def validate_for_write(bundle: dict, *, domain: DomainRules | None = None) -> list[Issue]:
    """What the write path (POST /fhir) checks on the entries of a transaction, collected as a ``collection``
    Bundle: the layers and domain rules of ``_validate_bundle``, then the extension write policy
    (``validation.policy``): an unknown modifierExtension refuses the write, an unknown extension never does."""
    issues = _validate_bundle(bundle, None, domain)
    return issues + vpolicy.write_issues(bundle)


def _layers(bundle: dict, wanted: list[str], prefix: str, root: str) -> list[Issue]:
    """The fast layers' issues, rebased on ``root``; a structure layer that cannot type the content stops there."""
    found: list[Issue] = []
    sd_keys = kapfhir_constraints.sd_keys()
    try:
        by_layer: dict[str, list[Issue]] | None = layers.validate_layers(bundle, wanted)  # one walk for all layers
    except Exception:  # noqa: BLE001 - broken content: run the layers one by one, so each reports what it can
        by_layer = None
    for layer in wanted:
        got = _layer(bundle, layer, by_layer, root)
        if layer == "structure" and any(i.code == "structure" for i in got):
            found += _rebase(got, prefix, root)
            if any("resource type" in i.diagnostics or "needs a resourceType" in i.diagnostics for i in got):
                return found
            continue
        got = [i for i in got if not (i.code == "invariant" and i.diagnostics.split(":")[0] in sd_keys)]
        found += _rebase(got, prefix, root)
    return found


def _layer(bundle: dict, layer: str, by_layer: dict[str, list[Issue]] | None, root: str) -> list[Issue]:
    try:
        return by_layer[layer] if by_layer is not None else layers.CHECKS[layer](bundle)
    except Exception as exc:  # noqa: BLE001 - a layer that cannot run on broken content reports, not crashes
        return [Issue("error", "exception", root, f"the {layer} check could not run: {type(exc).__name__}")]


def _rebase(issues: list[Issue], prefix: str, root: str) -> list[Issue]:
    out = []
    for issue in issues:
        expression = issue.expression
        if expression.startswith(prefix):
            expression = root + expression[len(prefix) :]
        expression = re.sub(r"^" + re.escape(root) + r"\.ofType\(\w+\)", root, expression)
        out.append(Issue(issue.severity, issue.code, expression, issue.diagnostics))
    return out


def _own_checks(resource: dict, root: str) -> list[Issue]:
    found = references.check(resource, root)
    if resource.get("resourceType") == "QuestionnaireResponse":
        found += questionnaire.check_against_kapfhir(resource, root)
    return found + kapfhir_constraints.check(resource, root)


def _validate_bundle(bundle: dict, profile: str | None, domain: DomainRules | None) -> list[Issue]:
    entries = bundle.get("entry")
    if entries is not None and not isinstance(entries, list):
        return [Issue("error", "structure", "Bundle.entry", "entry must be an array")]
    issues = _entries_refused(entries or [])
    if issues:
        return issues
    issues = _bundle_layers(bundle, entries or [], profile)
    for i, entry in enumerate(entries or []):
        issues += _own_checks(entry["resource"], f"Bundle.entry[{i}].resource")
    if (
        domain is not None
        and not any(x.severity in ("error", "fatal") for x in issues)
        and any(e["resource"]["resourceType"] == "EpisodeOfCare" for e in entries or [])
    ):
        issues += domain.bundle(bundle)
    return dedupe(issues)


def _entries_refused(entries: list) -> list[Issue]:
    """Entries with no resource, or a resource of no known type."""
    issues = []
    for i, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            issues.append(Issue("error", "required", f"Bundle.entry[{i}].resource", "every entry needs a resource"))
        elif not r4_type(resource.get("resourceType")):
            issues.append(
                Issue(
                    "fatal",
                    "structure",
                    f"Bundle.entry[{i}].resource.resourceType",
                    f"unknown resourceType {resource.get('resourceType')!r}",
                )
            )
    return issues


def _claims_kap_profile(entry: dict) -> bool:
    # a malformed meta or meta.profile claims nothing here (the structure layer reports it)
    meta = entry["resource"].get("meta")
    profiles = meta.get("profile") if isinstance(meta, dict) else None
    return isinstance(profiles, list) and any(isinstance(p, str) and p.startswith(KAP_PREFIX) for p in profiles)


def _bundle_layers(bundle: dict, entries: list, profile: str | None) -> list[Issue]:
    """The fast layers; kapfhir's profile rules when a kapfhir profile is asked for or claimed, then on the entries
    that claim one (not their neighbours: an EHR's Practitioner beside one of our MedicationAdministrations)."""
    asked = (profile or "").startswith(KAP_PREFIX)
    kap = asked or any(_claims_kap_profile(e) for e in entries)
    found = _layers(bundle, ["structure", "bindings", "invariants"] + (["profile"] if kap else []), "Bundle", "Bundle")
    if not kap or asked:
        return found
    claiming = {i for i, e in enumerate(entries) if _claims_kap_profile(e)}
    profile_only = {(i.code, i.expression, i.diagnostics) for i in _layers(bundle, ["profile"], "Bundle", "Bundle")}
    return [
        i
        for i in found
        if (i.code, i.expression, i.diagnostics) not in profile_only or entry_index(i.expression) in claiming
    ]
