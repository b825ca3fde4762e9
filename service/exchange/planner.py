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
  session's doses, vitals, scores, side effects and safety flags. Psychotherapy notes are never in the Bundle,
  so never in a summary.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from mappings import terminology as t
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
    types: dict[str, TypeCapability] = {}
    for res in rest.get("resource", []) or []:
        rtype = res.get("type")
        if not rtype:
            continue
        types[rtype] = TypeCapability(
            interactions=frozenset(i.get("code") for i in res.get("interaction", []) or [] if i.get("code")),
            conditional_create=bool(res.get("conditionalCreate", False)),
            conditional_update=bool(res.get("conditionalUpdate", False)),
            versioning=res.get("versioning", "no-version"),
            update_create=res.get("updateCreate", True) is not False,
            search_params=frozenset(p.get("name") for p in res.get("searchParam", []) or [] if p.get("name")),
            supported_profiles=frozenset(
                _canonical(p) for p in [*(res.get("supportedProfile") or []), res.get("profile")] if p
            ),
        )
    return Capabilities(
        fhir_version=statement.get("fhirVersion"),
        transaction="transaction" in system,
        batch="batch" in system,
        types=types,
        formats=tuple(statement.get("format", []) or ()),
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

    @property
    def empty(self) -> bool:
        return not self.requests

    def waves(self) -> list[list[PlannedRequest]]:
        """Requests grouped by dependency depth (batch mode sends one Bundle per wave)."""
        out: dict[int, list[PlannedRequest]] = {}
        for req in self.requests:
            out.setdefault(req.depth, []).append(req)
        return [out[d] for d in sorted(out)]

    def to_bundle(self, bundle_type: str = TRANSACTION, requests: list[PlannedRequest] | None = None) -> dict:
        return {
            "resourceType": "Bundle",
            "type": bundle_type,
            "entry": [r.bundle_entry() for r in (self.requests if requests is None else requests)],
        }

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


# R4 search parameters of types the shared table (service/fhir/r4_search_parameters.json) does not cover but the
# exchange sends. DocumentReference ``identifier`` (DocumentReference.masterIdentifier | .identifier):
# http://hl7.org/fhir/R4/documentreference.html#search (SearchParameter DocumentReference-identifier).
_R4_SEARCH_SUPPLEMENT: dict[str, frozenset[str]] = {"DocumentReference": frozenset({"identifier"})}


def r4_defines_search_parameter(resource_type: str, code: str) -> bool:
    """Does FHIR R4 4.0.1 define search parameter ``code`` for ``resource_type``? (e.g. not AdverseEvent
    ``identifier``: R4's AdverseEvent has no identifier search parameter, so a conditional create on it is refused
    by strict servers.)"""
    if code in _R4_SEARCH_SUPPLEMENT.get(resource_type, ()):
        return True
    from service.fhir.registry import r4_definition  # the shared R4 table (read once, cached)

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


def plan_push(
    bundle: Mapping[str, Any], capabilities: Capabilities, policy: PushPolicy, links: Links | None = None
) -> Plan:
    links = links or Links()
    entries = list(bundle.get("entry", []) or [])
    by_url = {e["fullUrl"]: e for e in entries}
    if policy.read_only:
        return Plan(NONE, held="the target is read-only: nothing is pushed to it")
    patient_entry = next((e for e in entries if e["resource"]["resourceType"] == "Patient"), None)
    plan = Plan(NONE)
    static: dict[str, dict] = {}  # fullUrl -> replacement reference
    dropped: set[str] = set()

    # --- administrative resources: who is created where -------------------------------------------------
    sandbox = policy.write_policy == "sandbox"
    for entry in entries:
        resource = entry["resource"]
        rtype = resource["resourceType"]
        if rtype not in ADMINISTRATIVE_TYPES:
            continue
        url = entry["fullUrl"]
        if sandbox and entry_key(entry) in links.remote:
            continue  # pushed by us before: updated (or left alone) like any other resource
        local = _parse_identifier(identifier_query(entry))
        linked: str | None = None
        if rtype == "Patient":
            linked = links.patient_id
        elif rtype == "Organization":
            linked = links.organization_id
        elif local is not None:
            linked = links.practitioner_ids.get(local[1])
        if linked:
            static[url] = {"reference": f"{rtype}/{linked}"}
            dropped.add(url)
            continue
        if sandbox:
            continue  # created (conditionally) like any other resource
        dropped.add(url)
        if rtype == "Patient":
            return Plan(
                NONE,
                held="the patient is not linked to this target's Patient (pull by MRN or link explicitly); "
                "an EHR target never gets a Patient created",
            )
        if rtype == "Practitioner":
            npi = next((i for i in resource.get("identifier", []) if i.get("system") == NPI_SYSTEM), None)
            ident = (npi["system"], npi["value"]) if npi else local
            if ident:
                static[url] = logical_reference("Practitioner", *ident, display=_name_display(resource))
            plan.notes.append(
                f"Practitioner {local[1] if local else '?'} referenced by "
                f"{'NPI' if npi else 'kapfhir identifier'} (not created on an EHR target)"
            )
        else:
            ident = policy.organization_identifier or local
            if ident:
                static[url] = logical_reference("Organization", *ident, display=resource.get("name"))
            if not policy.organization_identifier:
                plan.notes.append("Organization referenced by kapfhir's identifier: set organization_identifier")
    if patient_entry is None:
        return Plan(NONE, held="the bundle has no Patient")

    # --- what the target accepts ------------------------------------------------------------------------
    candidates: list[tuple[dict, str]] = []  # (entry, action)
    skipped_urls: set[str] = set()
    for entry in entries:
        url = entry["fullUrl"]
        if url in dropped:
            continue
        rtype = entry["resource"]["resourceType"]
        key = entry_key(entry)
        cap = capabilities.type(rtype)
        known = links.remote.get(key)
        reason = _refusal(cap, rtype, entry, known)
        if reason:
            plan.skipped.append(Skipped(key, rtype, reason))
            skipped_urls.add(url)
            continue
        candidates.append(
            (
                entry,
                UPDATE
                if known
                else (UPSERT if entry["request"]["method"] == "PUT" and "?" in entry["request"]["url"] else CREATE),
            )
        )

    for url in skipped_urls:
        entry = by_url[url]
        ident = _parse_identifier(identifier_query(entry))
        if ident:
            static[url] = logical_reference(entry["resource"]["resourceType"], *ident)
    known_refs: dict[str, dict] = {}  # fullUrl -> literal reference of a resource already on the server
    for entry, _action in candidates:
        known = links.remote.get(entry_key(entry))
        if known:
            known_refs[entry["fullUrl"]] = {"reference": f"{entry['resource']['resourceType']}/{known.id}"}

    # --- session summaries for EHRs that accept few writes ----------------------------------------------
    skipped_types = {s.resource_type for s in plan.skipped}
    docref = capabilities.type("DocumentReference")
    if policy.summary_fallback and docref is not None and docref.create and skipped_types & SUMMARY_TRIGGER_TYPES:
        for summary in session_summaries(bundle, accepted_urls={e["fullUrl"] for e, _ in candidates}):
            key = entry_key(summary)
            known = links.remote.get(key)
            if known and not docref.update:
                plan.skipped.append(Skipped(key, "DocumentReference", "summary changed but updates are refused"))
                continue
            candidates.append((summary, UPDATE if known else CREATE))
            by_url[summary["fullUrl"]] = summary
        plan.notes.append(
            "session summaries (DocumentReference) sent because the target does not accept: "
            + ", ".join(sorted(skipped_types & KAP_CLINICAL_TYPES))
        )
    if policy.summary_fallback and docref is not None and docref.create and "Consent" in skipped_types:
        for document in consent_documents(bundle):
            key = entry_key(document)
            known = links.remote.get(key)
            if known and not docref.update:
                plan.skipped.append(Skipped(key, "DocumentReference", "consent changed but updates are refused"))
                continue
            candidates.append((document, UPDATE if known else CREATE))
            by_url[document["fullUrl"]] = document
        plan.notes.append("the treatment consent sent as a DocumentReference because the target refuses Consent")

    # --- requests ---------------------------------------------------------------------------------------
    planned_urls = {e["fullUrl"] for e, _ in candidates}
    requests: list[PlannedRequest] = []
    for entry, action in candidates:
        resource = copy.deepcopy(entry["resource"])
        rewrite_references(resource, static)
        # the hash is taken before known ids replace urn:uuid references, so it is the same on every push
        digest = content_hash(resource)
        rewrite_references(resource, known_refs)
        rtype = resource["resourceType"]
        key = entry_key(entry)
        cap = capabilities.type(rtype)
        assert cap is not None
        known = links.remote.get(key)
        if known and known.content_hash == digest:
            plan.unchanged.append(Unchanged(key, rtype, known))
            continue
        query = identifier_query(entry)
        deps = tuple(
            sorted(
                {r["reference"] for r in walk_references(resource) if r["reference"] in planned_urls}
                - {entry["fullUrl"]}
            )
        )
        req = PlannedRequest(
            key=key,
            resource_type=rtype,
            full_url=entry["fullUrl"],
            resource=resource,
            action=action,
            method="POST",
            url=rtype,
            identifier_query=query,
            depends_on=deps,
            content_hash=digest,
            generated=bool(entry.get("_generated")),
        )
        fits = search_fits(rtype, query, cap)
        if action == UPDATE:
            assert known is not None
            resource["id"] = known.id
            req.method, req.url, req.known_id = "PUT", f"{rtype}/{known.id}", known.id
            if cap.versioned and known.version:
                req.if_match = f'W/"{known.version}"'
        elif action == UPSERT and fits:
            if cap.conditional_update:
                req.method, req.url = "PUT", entry["request"]["url"]
            elif cap.search:
                req.method, req.url, req.search_first = "PUT", entry["request"]["url"], True
            else:
                req.guarded = False
                plan.notes.append(f"{rtype}: no conditional update or search; created without a duplicate guard")
        elif entry["request"]["method"] == "PUT" and "?" not in entry["request"]["url"]:  # client-assigned id
            if cap.update and cap.update_create and rtype not in policy.no_client_ids:
                req.method, req.url = "PUT", entry["request"]["url"]
                resource.setdefault("id", entry["request"]["url"].split("/", 1)[1])
            else:  # the server chooses the id; it is remembered (Links.remote) for later updates
                resource.pop("id", None)
                req.guarded = False
                plan.adaptations.append(
                    Adaptation(CREATE_NOT_PUT, rtype, "sent as a create: the target does not take client-assigned ids")
                )
        elif not fits:  # no R4 search parameter fits: a plain create; the server's id is remembered
            req.guarded = False
            name = (query or "").split("=", 1)[0] or "?"
            why = (
                f"R4 defines no '{name}' search parameter for {rtype}"
                if query and not r4_defines_search_parameter(rtype, name)
                else f"the target lists no '{name}' search parameter for {rtype}"
            )
            plan.adaptations.append(
                Adaptation(PLAIN_CREATE, rtype, f"created without a condition ({why}); the server's id is remembered")
            )
        elif cap.conditional_create:
            req.if_none_exist = query
        elif cap.search:
            req.search_first = True
        else:
            req.guarded = False
            plan.notes.append(f"{rtype}: no conditional create or search; created without a duplicate guard")
        for claim, why in adapt_profiles(resource, cap, policy.drop_profiles):
            plan.adaptations.append(Adaptation(PROFILE_REMOVED, rtype, f"profile claim {claim} left out ({why})"))
        if rtype == "Patient":
            plan.patient_key = key
        requests.append(req)

    plan.requests = _order(requests, plan)
    plan.references = {**static, **known_refs}
    if not plan.requests:
        plan.mode = NONE
    elif capabilities.transaction and not any(r.search_first for r in plan.requests):
        plan.mode = TRANSACTION
    elif capabilities.batch and not any(r.search_first for r in plan.requests):
        plan.mode = BATCH
    else:
        plan.mode = SINGLE
    return plan


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
