"""Capability-aware push planning. Pure: no I/O, no clock; the same inputs always give the same plan.

``plan_push(bundle, capabilities, policy, links)`` turns the transaction Bundle of an episode
(:func:`mappings.bundle.to_transaction_bundle`) into a :class:`Plan` for one target:

* **Who is created where.** Patient, Practitioner and Organization are created only on a ``sandbox`` target.
  On an ``ehr`` target they are never sent: the Patient must be linked (``links.patient_id``, from pull by MRN
  or an explicit link) or nothing at all is planned (``plan.held``); practitioners are referenced by their
  linked id, else logically by NPI (else by kapfhir's identifier), with their name as display; the
  organization by its linked id, else logically by the target's ``organization_identifier``.
* **What the target accepts.** A resource type the CapabilityStatement does not list with the interaction a
  request needs (create, update) is skipped and reported in ``plan.skipped`` with a reason; references to a
  skipped resource become logical references (type + business identifier), never dangling ``urn:uuid``s.
* **How.** ``transaction`` when the server supports it, else ``batch``, else ``single`` requests; for batch
  and single, requests carry a dependency ``depth`` so the executor sends them in waves and rewrites
  references to the ids the server assigned. Cycles are broken with a logical reference.
* **Exactly once.** New resources go as conditional creates (``If-None-Exist`` on the business identifier);
  amended records as conditional updates; a resource whose remote id is known (``links.remote``) goes as
  ``PUT Type/id`` with ``If-Match`` when the server versions that type - or not at all when its content hash
  is unchanged. A server without conditional create/update gets ``search_first`` requests (the executor
  searches by identifier, then creates or updates by id).
* **What a strict server takes** (``plan.adaptations``, reported). Conditions use only search parameters R4 4.0.1
  defines for the type (and the server lists, when it lists any); where none fits (AdverseEvent has no
  ``identifier`` parameter in R4) the resource is created plainly and its server id remembered (``Links.remote``).
  A client-assigned id (the Provenance) is a ``PUT`` only where the server declares ``updateCreate``, else a
  create. Profile claims the target does not list in ``supportedProfile`` (when it lists any for the type) or that
  ``policy.drop_profiles`` names are left out. (:mod:`service.exchange.push` adapts to refusals that only the
  server's answer reveals.)
* **Session summary fallback.** When the target accepts DocumentReference but skips KAP clinical types, each
  session gets a DocumentReference (US Core clinical note, LOINC 11506-3 progress note) whose text lists the
  session's doses, vitals, scores, side effects and safety flags; when it refuses Consent, the treatment consent
  goes as a DocumentReference. Both are built by :mod:`mappings.resources.document_reference`. Psychotherapy notes
  are never in the Bundle, so never in a summary.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from mappings import terminology as t
from mappings.bundle import request_bundle
from mappings.resources.document_reference import consent_documents, session_summaries

TRANSACTION, BATCH, SINGLE, NONE = "transaction", "batch", "single", "none"
ADMINISTRATIVE_TYPES = ("Patient", "Practitioner", "Organization")
KAP_CLINICAL_TYPES = frozenset(
    {
        "MedicationAdministration",
        "Observation",
        "AdverseEvent",
        "QuestionnaireResponse",
        "Consent",
        "CarePlan",
        "EpisodeOfCare",
        "MedicationRequest",
        "DetectedIssue",
    }
)
# The session summary goes out when the target refuses any of these (doses, vitals and scores would be lost).
SUMMARY_TRIGGER_TYPES = frozenset({"MedicationAdministration", "Observation"})
NPI_SYSTEM = t.NPI
CREATE, UPSERT, UPDATE = "create", "upsert", "update"


# ----------------------------------------------------------------------------------------- capabilities


@dataclass(frozen=True)
class TypeCapability:
    interactions: frozenset[str]
    conditional_create: bool = False
    conditional_update: bool = False
    versioning: str = "no-version"  # no-version | versioned | versioned-update
    update_create: bool = True  # may the client choose the id (PUT to a new id)?
    search_params: frozenset[str] = frozenset()  # searchParam names the server lists (often none listed)
    supported_profiles: frozenset[str] = frozenset()  # supportedProfile (+ profile); empty: not declared

    @property
    def create(self) -> bool:
        return "create" in self.interactions

    @property
    def update(self) -> bool:
        return "update" in self.interactions

    @property
    def search(self) -> bool:
        return "search-type" in self.interactions

    @property
    def versioned(self) -> bool:
        return self.versioning in ("versioned", "versioned-update")


@dataclass(frozen=True)
class Capabilities:
    fhir_version: str | None
    transaction: bool
    batch: bool
    types: Mapping[str, TypeCapability]
    formats: tuple[str, ...] = ()

    def type(self, resource_type: str) -> TypeCapability | None:
        return self.types.get(resource_type)


def parse_capabilities(statement: Mapping[str, Any]) -> Capabilities:
    """The parts of a CapabilityStatement the planner uses (the first ``rest`` with mode ``server``)."""
    rests = [r for r in statement.get("rest", []) or [] if r.get("mode", "server") == "server"]
    rest = rests[0] if rests else {}
    system = {i.get("code") for i in rest.get("interaction", []) or []}
    types = {res["type"]: _type_capability(res) for res in rest.get("resource", []) or [] if res.get("type")}
    return Capabilities(
        fhir_version=statement.get("fhirVersion"),
        transaction="transaction" in system,
        batch="batch" in system,
        types=types,
        formats=tuple(statement.get("format", []) or ()),
    )


def _codes(items: list[dict] | None, name: str) -> frozenset[str]:
    return frozenset(i.get(name) for i in items or [] if i.get(name))


def _type_capability(res: Mapping[str, Any]) -> TypeCapability:
    profiles = [*(res.get("supportedProfile") or []), res.get("profile")]
    return TypeCapability(
        interactions=_codes(res.get("interaction"), "code"),
        conditional_create=bool(res.get("conditionalCreate", False)),
        conditional_update=bool(res.get("conditionalUpdate", False)),
        versioning=res.get("versioning", "no-version"),
        update_create=res.get("updateCreate", True) is not False,
        search_params=_codes(res.get("searchParam"), "name"),
        supported_profiles=frozenset(_canonical(p) for p in profiles if p),
    )


# ------------------------------------------------------------------------------------------------ links


@dataclass(frozen=True)
class RemoteRecord:
    """What the last push left on the server for one entry key."""

    id: str
    version: str | None = None
    content_hash: str | None = None


@dataclass(frozen=True)
class Links:
    """Local -> remote links of one patient on one target (the lead persists these)."""

    patient_id: str | None = None  # the target's Patient id (pull by MRN or explicit link)
    organization_id: str | None = None  # the target's Organization id for the clinic, if linked
    practitioner_ids: Mapping[str, str] = field(default_factory=dict)  # local practitioner id -> remote id
    remote: Mapping[str, RemoteRecord] = field(default_factory=dict)  # entry key -> last pushed state


@dataclass(frozen=True)
class PushPolicy:
    """The target-side settings the planner needs (from :class:`service.exchange.targets.Target`)."""

    write_policy: str = "ehr"  # sandbox | ehr
    organization_identifier: tuple[str, str] | None = None  # (system, value)
    read_only: bool = False
    summary_fallback: bool = True
    # profile claims never sent to this target (its setting, plus claims it refused earlier in this process)
    drop_profiles: frozenset[str] = frozenset()
    # types whose client-assigned ids (PUT to a new id) the target refused earlier: sent as creates instead
    no_client_ids: frozenset[str] = frozenset()

    @classmethod
    def for_target(cls, target: Any, **overrides: Any) -> PushPolicy:
        org = target.organization_identifier
        fields: dict[str, Any] = {
            "write_policy": target.write_policy,
            "organization_identifier": (org.system, org.value) if org else None,
            "read_only": target.read_only,
            "drop_profiles": frozenset(_canonical(p) for p in getattr(target, "drop_profiles", ()) or ()),
        }
        return cls(**{**fields, **overrides})


# ------------------------------------------------------------------------------------------------- plan


@dataclass
class PlannedRequest:
    key: str  # stable entry key: the conditional URL (e.g. "Observation?identifier=sys|val") or "Type/id"
    resource_type: str
    full_url: str
    resource: dict
    action: str  # create (conditional) | upsert (conditional update) | update (by known id)
    method: str
    url: str
    identifier_query: str | None  # "identifier=system|value"
    if_none_exist: str | None = None
    if_match: str | None = None
    search_first: bool = False  # no conditional interaction on the server: search by identifier first
    guarded: bool = True  # False: a plain create the server cannot de-duplicate (sent without retries)
    depends_on: tuple[str, ...] = ()  # fullUrls of planned requests this one references
    depth: int = 0
    content_hash: str = ""
    generated: bool = False  # a session summary built by the planner
    known_id: str | None = None

    def bundle_entry(self) -> dict:
        request: dict[str, str] = {"method": self.method, "url": self.url}
        if self.if_none_exist:
            request["ifNoneExist"] = self.if_none_exist
        if self.if_match:
            request["ifMatch"] = self.if_match
        return {"fullUrl": self.full_url, "resource": self.resource, "request": request}


@dataclass(frozen=True)
class Adaptation:
    """One way a resource was sent differently so that the target takes it (reported, never silent)."""

    kind: str  # PLAIN_CREATE | CREATE_NOT_PUT | PROFILE_REMOVED
    resource_type: str
    detail: str


PLAIN_CREATE = "create-without-condition"  # no R4 search parameter fits: created, the server's id remembered
CREATE_NOT_PUT = "create-instead-of-put"  # the target does not take client-assigned ids: POST, id remembered
PROFILE_REMOVED = "profile-claim-removed"  # a claim the target does not support (or refused) is left out


def adaptation_counts(adaptations: list[Adaptation]) -> list[dict[str, Any]]:
    """Adaptations grouped (kind, type, detail) with how many resources each concerned, in first-seen order."""
    counts: dict[Adaptation, int] = {}
    for a in adaptations:
        counts[a] = counts.get(a, 0) + 1
    return [{"kind": a.kind, "type": a.resource_type, "detail": a.detail, "count": n} for a, n in counts.items()]


@dataclass(frozen=True)
class Skipped:
    key: str
    resource_type: str
    reason: str


@dataclass(frozen=True)
class Unchanged:
    key: str
    resource_type: str
    remote: RemoteRecord


@dataclass
class Plan:
    mode: str
    requests: list[PlannedRequest] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    unchanged: list[Unchanged] = field(default_factory=list)
    held: str | None = None  # why nothing is planned (patient not linked, read-only target, ...)
    notes: list[str] = field(default_factory=list)
    patient_key: str | None = None  # entry key of the Patient when the plan creates it (sandbox)
    references: dict[str, dict] = field(default_factory=dict)  # fullUrl -> reference replacing it (static)
    adaptations: list[Adaptation] = field(default_factory=list)

    def waves(self) -> list[list[PlannedRequest]]:
        """Requests grouped by dependency depth (batch mode sends one Bundle per wave)."""
        out: dict[int, list[PlannedRequest]] = {}
        for req in self.requests:
            out.setdefault(req.depth, []).append(req)
        return [out[d] for d in sorted(out)]

    def to_bundle(self, bundle_type: str = TRANSACTION, requests: list[PlannedRequest] | None = None) -> dict:
        chosen = self.requests if requests is None else requests
        return request_bundle(bundle_type, [r.bundle_entry() for r in chosen])

    def summary(self) -> dict[str, Any]:
        by_type: dict[str, dict[str, int]] = {}
        for req in self.requests:
            by_type.setdefault(req.resource_type, {}).setdefault(req.action, 0)
            by_type[req.resource_type][req.action] += 1
        for s in self.skipped:
            by_type.setdefault(s.resource_type, {}).setdefault("skipped", 0)
            by_type[s.resource_type]["skipped"] += 1
        for u in self.unchanged:
            by_type.setdefault(u.resource_type, {}).setdefault("unchanged", 0)
            by_type[u.resource_type]["unchanged"] += 1
        return {
            "mode": self.mode,
            "held": self.held,
            "types": by_type,
            "notes": list(self.notes),
            "adapted": adaptation_counts(self.adaptations),
        }


# --------------------------------------------------------------------------------------------- helpers


def entry_key(entry: Mapping[str, Any]) -> str:
    """The stable key of a transaction entry: its conditional URL, or ``Type/id`` for an update by id."""
    req = entry["request"]
    if req.get("ifNoneExist"):
        return f"{req['url']}?{req['ifNoneExist']}"
    return req["url"]


def identifier_query(entry: Mapping[str, Any]) -> str | None:
    req = entry["request"]
    if req.get("ifNoneExist"):
        return req["ifNoneExist"]
    if "?" in req["url"]:
        return req["url"].split("?", 1)[1]
    return None


def content_hash(resource: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a resource as planned (sorted keys)."""
    data = json.dumps(resource, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def walk_references(node: Any) -> Iterator[dict]:
    """Every Reference-like dict (with a string ``reference``) in a resource tree."""
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            yield node
        for value in node.values():
            yield from walk_references(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk_references(value)


def _parse_identifier(query: str | None) -> tuple[str, str] | None:
    if not query or not query.startswith("identifier="):
        return None
    system, sep, value = query[len("identifier=") :].rpartition("|")
    return (system, value) if sep else None


def _canonical(url: str) -> str:
    """A canonical URL without its ``|version``."""
    return url.split("|", 1)[0]


# R4 search parameters of types the shared table (mappings/r4_search_parameters.json) does not cover but the
# exchange sends. DocumentReference ``identifier`` (DocumentReference.masterIdentifier | .identifier):
# http://hl7.org/fhir/R4/documentreference.html#search (SearchParameter DocumentReference-identifier).
_R4_SEARCH_SUPPLEMENT: dict[str, frozenset[str]] = {"DocumentReference": frozenset({"identifier"})}


def r4_defines_search_parameter(resource_type: str, code: str) -> bool:
    """Does FHIR R4 4.0.1 define search parameter ``code`` for ``resource_type``? (e.g. not AdverseEvent
    ``identifier``: R4's AdverseEvent has no identifier search parameter, so a conditional create on it is refused
    by strict servers.)"""
    if code in _R4_SEARCH_SUPPLEMENT.get(resource_type, ()):
        return True
    from mappings.search_parameters import r4_definition  # the shared R4 table (read once, cached)

    return r4_definition(resource_type, code) is not None


def search_fits(resource_type: str, query: str | None, cap: TypeCapability | None) -> bool:
    """May ``query`` (``name=value``) be used for a conditional interaction or search on this target? Only when
    R4 defines the parameter for the type and the server, if it lists its search parameters, lists it."""
    if not query or cap is None:
        return False
    name = query.split("=", 1)[0].split(":", 1)[0]
    if not r4_defines_search_parameter(resource_type, name):
        return False
    return not cap.search_params or name in cap.search_params


def adapt_profiles(
    resource: dict, cap: TypeCapability | None, drop: frozenset[str] | set[str]
) -> list[tuple[str, str]]:
    """Remove profile claims the target does not list as supported (when it lists any) or that are in ``drop``
    (in place). Returns (claim, why) for each removed claim."""
    meta = resource.get("meta")
    claims = (meta or {}).get("profile") or []
    if not claims:
        return []
    supported = cap.supported_profiles if cap is not None else frozenset()
    removed: list[tuple[str, str]] = []
    kept: list[str] = []
    for claim in claims:
        if _canonical(claim) in drop:
            removed.append((claim, "refused by the target or excluded by its setting"))
        elif supported and _canonical(claim) not in supported:
            removed.append((claim, "not in the target's supportedProfile"))
        else:
            kept.append(claim)
    if removed:
        assert meta is not None
        if kept:
            meta["profile"] = kept
        else:
            meta.pop("profile", None)
            if not meta:
                resource.pop("meta", None)
    return removed


def logical_reference(resource_type: str, system: str, value: str, display: str | None = None) -> dict:
    ref: dict[str, Any] = {"type": resource_type, "identifier": {"system": system, "value": value}}
    if display:
        ref["display"] = display
    return ref


def _name_display(resource: Mapping[str, Any]) -> str | None:
    names = resource.get("name")
    if isinstance(names, str):
        return names
    if isinstance(names, list) and names:
        name = names[0]
        parts = [*name.get("given", []), name.get("family", "")]
        return " ".join(p for p in parts if p) or None
    return None


def _replace_reference(ref: dict, replacement: dict) -> None:
    for key in ("reference", "type", "identifier", "display"):
        ref.pop(key, None)
    ref.update(copy.deepcopy(replacement))


def rewrite_references(resource: dict, mapping: Mapping[str, dict]) -> None:
    """Replace references whose ``reference`` is a key of ``mapping`` by the mapped reference (in place)."""
    for ref in list(walk_references(resource)):
        replacement = mapping.get(ref["reference"])
        if replacement is not None:
            _replace_reference(ref, replacement)


# ---------------------------------------------------------------------------------------------- planner


@dataclass
class _Planning:
    """What one planning pass knows so far; each decision below reads and adds to it."""

    capabilities: Capabilities
    policy: PushPolicy
    links: Links
    plan: Plan = field(default_factory=lambda: Plan(NONE))
    static: dict[str, dict] = field(default_factory=dict)  # fullUrl -> replacement reference
    dropped: set[str] = field(default_factory=set)  # fullUrls never sent (linked or referenced logically)
    candidates: list[tuple[dict, str]] = field(default_factory=list)  # (entry, action)
    known_refs: dict[str, dict] = field(default_factory=dict)  # fullUrl -> literal reference of a known resource


def plan_push(
    bundle: Mapping[str, Any], capabilities: Capabilities, policy: PushPolicy, links: Links | None = None
) -> Plan:
    entries = list(bundle.get("entry", []) or [])
    if policy.read_only:
        return Plan(NONE, held="the target is read-only: nothing is pushed to it")
    state = _Planning(capabilities, policy, links or Links())
    held = _place_administrative(entries, state)  # who is created where
    if held is not None:
        return held
    if not any(e["resource"]["resourceType"] == "Patient" for e in entries):
        return Plan(NONE, held="the bundle has no Patient")
    _accept(entries, state)  # what the target accepts
    _add_fallback_documents(bundle, state)  # session summaries and consent documents for EHRs that take few writes
    planned_urls = {e["fullUrl"] for e, _ in state.candidates}
    requests = [r for e, a in state.candidates if (r := _request(e, a, state, planned_urls)) is not None]
    plan = state.plan
    plan.requests = _order(requests, plan)
    plan.references = {**state.static, **state.known_refs}
    plan.mode = _mode(plan.requests, capabilities)  # how it is sent
    return plan


# --- who is created where ---------------------------------------------------------------------------------------


def _linked_id(rtype: str, links: Links, local: tuple[str, str] | None) -> str | None:
    if rtype == "Patient":
        return links.patient_id
    if rtype == "Organization":
        return links.organization_id
    return links.practitioner_ids.get(local[1]) if local is not None else None


def _place_administrative(entries: list[dict], state: _Planning) -> Plan | None:
    """Patient, Practitioner, Organization: referenced by their linked id; created on a sandbox; else (an EHR)
    never sent. Returns the held plan when an EHR target's Patient is not linked."""
    sandbox = state.policy.write_policy == "sandbox"
    for entry in entries:
        rtype = entry["resource"]["resourceType"]
        if rtype not in ADMINISTRATIVE_TYPES:
            continue
        if sandbox and entry_key(entry) in state.links.remote:
            continue  # pushed by us before: updated (or left alone) like any other resource
        url = entry["fullUrl"]
        local = _parse_identifier(identifier_query(entry))
        linked = _linked_id(rtype, state.links, local)
        if linked:
            state.static[url] = {"reference": f"{rtype}/{linked}"}
            state.dropped.add(url)
            continue
        if sandbox:
            continue  # created (conditionally) like any other resource
        state.dropped.add(url)
        if rtype == "Patient":
            return Plan(
                NONE,
                held="the patient is not linked to this target's Patient (pull by MRN or link explicitly); "
                "an EHR target never gets a Patient created",
            )
        if rtype == "Practitioner":
            _reference_practitioner(entry, local, state)
        else:
            _reference_organization(entry, local, state)
    return None


def _reference_practitioner(entry: dict, local: tuple[str, str] | None, state: _Planning) -> None:
    """On an EHR, a practitioner is referenced logically: by NPI, else by kapfhir's identifier."""
    resource = entry["resource"]
    npi = next((i for i in resource.get("identifier", []) if i.get("system") == NPI_SYSTEM), None)
    ident = (npi["system"], npi["value"]) if npi else local
    if ident:
        state.static[entry["fullUrl"]] = logical_reference("Practitioner", *ident, display=_name_display(resource))
    state.plan.notes.append(
        f"Practitioner {local[1] if local else '?'} referenced by "
        f"{'NPI' if npi else 'kapfhir identifier'} (not created on an EHR target)"
    )


def _reference_organization(entry: dict, local: tuple[str, str] | None, state: _Planning) -> None:
    """On an EHR, the organization is referenced by the target's organization_identifier, else kapfhir's."""
    ident = state.policy.organization_identifier or local
    if ident:
        state.static[entry["fullUrl"]] = logical_reference(
            "Organization", *ident, display=entry["resource"].get("name")
        )
    if not state.policy.organization_identifier:
        state.plan.notes.append("Organization referenced by kapfhir's identifier: set organization_identifier")


# --- what the target accepts ------------------------------------------------------------------------------------


def _action(entry: Mapping[str, Any], known: RemoteRecord | None) -> str:
    if known:
        return UPDATE
    request = entry["request"]
    return UPSERT if request["method"] == "PUT" and "?" in request["url"] else CREATE


def _accept(entries: list[dict], state: _Planning) -> None:
    """Candidates are the entries the target takes; a skipped one is reported and referenced logically."""
    skipped: list[dict] = []
    for entry in entries:
        if entry["fullUrl"] in state.dropped:
            continue
        rtype = entry["resource"]["resourceType"]
        key = entry_key(entry)
        known = state.links.remote.get(key)
        reason = _refusal(state.capabilities.type(rtype), rtype, entry, known)
        if reason:
            state.plan.skipped.append(Skipped(key, rtype, reason))
            skipped.append(entry)
            continue
        state.candidates.append((entry, _action(entry, known)))
    for entry in skipped:
        ident = _parse_identifier(identifier_query(entry))
        if ident:
            state.static[entry["fullUrl"]] = logical_reference(entry["resource"]["resourceType"], *ident)
    for entry, _ in state.candidates:
        known = state.links.remote.get(entry_key(entry))
        if known:
            state.known_refs[entry["fullUrl"]] = {"reference": f"{entry['resource']['resourceType']}/{known.id}"}


def _add_fallback_documents(bundle: Mapping[str, Any], state: _Planning) -> None:
    """Session summaries when doses or observations are refused; the consent as a document when Consent is."""
    docref = state.capabilities.type("DocumentReference")
    if not (state.policy.summary_fallback and docref is not None and docref.create):
        return
    skipped_types = {s.resource_type for s in state.plan.skipped}
    if skipped_types & SUMMARY_TRIGGER_TYPES:
        accepted = {e["fullUrl"] for e, _ in state.candidates}
        _add_documents(session_summaries(bundle, accepted_urls=accepted), docref, "summary", state)
        state.plan.notes.append(
            "session summaries (DocumentReference) sent because the target does not accept: "
            + ", ".join(sorted(skipped_types & KAP_CLINICAL_TYPES))
        )
    if "Consent" in skipped_types:
        _add_documents(consent_documents(bundle), docref, "consent", state)
        state.plan.notes.append("the treatment consent sent as a DocumentReference because the target refuses Consent")


def _add_documents(documents: list[dict], docref: TypeCapability, what: str, state: _Planning) -> None:
    for document in documents:
        key = entry_key(document)
        known = state.links.remote.get(key)
        if known and not docref.update:
            state.plan.skipped.append(Skipped(key, "DocumentReference", f"{what} changed but updates are refused"))
            continue
        state.candidates.append((document, UPDATE if known else CREATE))


# --- how each resource is sent ----------------------------------------------------------------------------------


def _request(entry: dict, action: str, state: _Planning, planned_urls: set[str]) -> PlannedRequest | None:
    """The request of one candidate, or None when its content is unchanged since the last push."""
    resource = copy.deepcopy(entry["resource"])
    rewrite_references(resource, state.static)
    # the hash is taken before known ids replace urn:uuid references, so it is the same on every push
    digest = content_hash(resource)
    rewrite_references(resource, state.known_refs)
    rtype = resource["resourceType"]
    key = entry_key(entry)
    cap = state.capabilities.type(rtype)
    assert cap is not None
    known = state.links.remote.get(key)
    if known and known.content_hash == digest:
        state.plan.unchanged.append(Unchanged(key, rtype, known))
        return None
    references = {r["reference"] for r in walk_references(resource) if r["reference"] in planned_urls}
    req = PlannedRequest(
        key=key,
        resource_type=rtype,
        full_url=entry["fullUrl"],
        resource=resource,
        action=action,
        method="POST",
        url=rtype,
        identifier_query=identifier_query(entry),
        depends_on=tuple(sorted(references - {entry["fullUrl"]})),
        content_hash=digest,
        generated=bool(entry.get("_generated")),
    )
    _choose_interaction(req, entry, cap, known, state)
    for claim, why in adapt_profiles(resource, cap, state.policy.drop_profiles):
        state.plan.adaptations.append(Adaptation(PROFILE_REMOVED, rtype, f"profile claim {claim} left out ({why})"))
    if rtype == "Patient":
        state.plan.patient_key = key
    return req


def _choose_interaction(
    req: PlannedRequest, entry: Mapping[str, Any], cap: TypeCapability, known: RemoteRecord | None, state: _Planning
) -> None:
    """Update by known id; conditional update; PUT with a client id; plain or conditional create (in that order)."""
    fits = search_fits(req.resource_type, req.identifier_query, cap)
    method, url = entry["request"]["method"], entry["request"]["url"]
    if req.action == UPDATE:
        assert known is not None
        _update_known(req, cap, known)
    elif req.action == UPSERT and fits:
        _conditional_update(req, cap, url, state.plan)
    elif method == "PUT" and "?" not in url:  # client-assigned id
        _client_assigned_id(req, cap, url, state)
    elif not fits:  # no R4 search parameter fits: a plain create; the server's id is remembered
        _plain_create(req, state.plan)
    else:
        _conditional_create(req, cap, state.plan)


def _update_known(req: PlannedRequest, cap: TypeCapability, known: RemoteRecord) -> None:
    req.resource["id"] = known.id
    req.method, req.url, req.known_id = "PUT", f"{req.resource_type}/{known.id}", known.id
    if cap.versioned and known.version:
        req.if_match = f'W/"{known.version}"'


def _conditional_update(req: PlannedRequest, cap: TypeCapability, url: str, plan: Plan) -> None:
    if cap.conditional_update:
        req.method, req.url = "PUT", url
    elif cap.search:
        req.method, req.url, req.search_first = "PUT", url, True
    else:
        req.guarded = False
        plan.notes.append(f"{req.resource_type}: no conditional update or search; created without a duplicate guard")


def _client_assigned_id(req: PlannedRequest, cap: TypeCapability, url: str, state: _Planning) -> None:
    if cap.update and cap.update_create and req.resource_type not in state.policy.no_client_ids:
        req.method, req.url = "PUT", url
        req.resource.setdefault("id", url.split("/", 1)[1])
        return
    # the server chooses the id; it is remembered (Links.remote) for later updates
    req.resource.pop("id", None)
    req.guarded = False
    state.plan.adaptations.append(
        Adaptation(CREATE_NOT_PUT, req.resource_type, "sent as a create: the target does not take client-assigned ids")
    )


def _plain_create(req: PlannedRequest, plan: Plan) -> None:
    req.guarded = False
    rtype, query = req.resource_type, req.identifier_query
    name = (query or "").split("=", 1)[0] or "?"
    why = (
        f"R4 defines no '{name}' search parameter for {rtype}"
        if query and not r4_defines_search_parameter(rtype, name)
        else f"the target lists no '{name}' search parameter for {rtype}"
    )
    plan.adaptations.append(
        Adaptation(PLAIN_CREATE, rtype, f"created without a condition ({why}); the server's id is remembered")
    )


def _conditional_create(req: PlannedRequest, cap: TypeCapability, plan: Plan) -> None:
    if cap.conditional_create:
        req.if_none_exist = req.identifier_query
    elif cap.search:
        req.search_first = True
    else:
        req.guarded = False
        plan.notes.append(f"{req.resource_type}: no conditional create or search; created without a duplicate guard")


def _mode(requests: list[PlannedRequest], capabilities: Capabilities) -> str:
    """One transaction when the server takes it, else batch, else single requests (and always single when a
    request must search first)."""
    searching = any(r.search_first for r in requests)
    if not requests:
        return NONE
    if capabilities.transaction and not searching:
        return TRANSACTION
    if capabilities.batch and not searching:
        return BATCH
    return SINGLE


def _refusal(
    cap: TypeCapability | None, rtype: str, entry: Mapping[str, Any], known: RemoteRecord | None
) -> str | None:
    if cap is None:
        return f"the target does not support {rtype} (not in its CapabilityStatement)"
    method = entry["request"]["method"]
    url = entry["request"]["url"]
    if known:
        return None if cap.update else f"the target does not allow updating {rtype}; the change is not sent"
    if method == "PUT" and "?" not in url:  # client-assigned id: PUT where the server takes it, else a create
        if (cap.update and cap.update_create) or cap.create:
            return None
        return f"the target allows neither create nor update with a client-assigned id of {rtype}"
    if method == "PUT":
        if cap.conditional_update or (cap.search and cap.update) or cap.create:
            return None
        return f"the target accepts neither create nor update of {rtype}"
    return None if cap.create else f"the target does not allow create on {rtype}"


def _order(requests: list[PlannedRequest], plan: Plan) -> list[PlannedRequest]:
    """Topological order (dependencies first, else bundle order) with depths; cycles broken logically."""
    by_url = {r.full_url: r for r in requests}
    state: dict[str, int] = {}  # 1 = visiting, 2 = done
    out: list[PlannedRequest] = []

    def visit(req: PlannedRequest) -> None:
        state[req.full_url] = 1
        kept: list[str] = []
        for dep in req.depends_on:
            if state.get(dep) == 1:  # back edge: reference it by identifier instead
                target = by_url[dep]
                ident = _parse_identifier(target.identifier_query)
                if ident:
                    rewrite_references(req.resource, {dep: logical_reference(target.resource_type, *ident)})
                    plan.notes.append(
                        f"reference cycle {req.resource_type} -> {target.resource_type} broken with a logical reference"
                    )
                    continue
            if state.get(dep) is None:
                visit(by_url[dep])
            kept.append(dep)
        req.depends_on = tuple(kept)
        req.depth = 1 + max((by_url[d].depth for d in kept), default=-1)
        state[req.full_url] = 2
        out.append(req)

    for req in requests:
        if state.get(req.full_url) is None:
            visit(req)
    return out
