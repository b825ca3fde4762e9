"""Execute a push :class:`~service.exchange.planner.Plan` against a target, and pull a patient by MRN.

``execute_plan(client, plan)`` sends the plan (one transaction; batches in dependency waves; or single
requests in dependency order with references rewritten to the ids the server assigned) and returns a
:class:`PushReport`: per resource the outcome (created / already there / updated / skipped / failed), the
server's id and version, and the content hash, which the caller stores as ``Links.remote`` so the next push
sends only what changed (as ``PUT Type/id`` with ``If-Match`` where the server versions the type).

Real-server differences handled: a matching conditional create answered ``200`` with no ``Location`` (the id is
then taken from the body, else found by searching the identifier); ids in ``Location`` with or without
``_history``; versions from ``ETag`` or ``meta.versionId``; ``/metadata`` as ``application/json``.

``push_bundle(...)`` is the whole job for a worker: privacy gate, CapabilityStatement, plan, execute.
``pull_patient(...)`` finds a Patient by MRN and reports demographic differences (never overwrites).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from service.exchange.client import (
    FhirClient,
    FhirError,
    FhirHttpError,
    FhirTransportError,
    RemoteIdentity,
    identity_of,
)
from service.exchange.planner import (
    BATCH,
    CREATE,
    NONE,
    TRANSACTION,
    UPDATE,
    UPSERT,
    Links,
    Plan,
    PlannedRequest,
    PushPolicy,
    RemoteRecord,
    parse_capabilities,
    plan_push,
    rewrite_references,
)
from service.exchange.privacy import (
    OrganizationRef,
    PrivacyConsent,
    bundle_has_substance_use,
    evaluate_privacy,
)

log = logging.getLogger(__name__)

CREATED, EXISTING, UPDATED, SKIPPED, FAILED = "created", "already-there", "updated", "skipped", "failed"
OUTCOMES = (CREATED, EXISTING, UPDATED, SKIPPED, FAILED)


@dataclass
class ResourceResult:
    key: str
    resource_type: str
    outcome: str
    remote_id: str | None = None
    version: str | None = None
    status: int | None = None
    reason: str | None = None
    operation_outcome: dict | None = None
    content_hash: str | None = None
    sent: bool = True  # False: "already there" known from the stored hash, nothing was sent
    retryable: bool = False


@dataclass
class PushReport:
    mode: str
    results: list[ResourceResult] = field(default_factory=list)
    held: str | None = None
    notes: list[str] = field(default_factory=list)
    patient_key: str | None = None

    @property
    def ok(self) -> bool:
        return self.held is None and not any(r.outcome == FAILED for r in self.results)

    @property
    def failed(self) -> list[ResourceResult]:
        return [r for r in self.results if r.outcome == FAILED]

    @property
    def retryable(self) -> bool:
        """True when every failure may heal by retrying later (transport errors, 429, 5xx)."""
        return bool(self.failed) and all(r.retryable for r in self.failed)

    @property
    def last_operation_outcome(self) -> dict | None:
        return next((r.operation_outcome for r in reversed(self.failed) if r.operation_outcome), None)

    def counts(self) -> dict[str, dict[str, int]]:
        """``{resource type: {outcome: n}}`` for the report table."""
        out: dict[str, dict[str, int]] = {}
        for r in self.results:
            row = out.setdefault(r.resource_type, dict.fromkeys(OUTCOMES, 0))
            row[r.outcome] += 1
        return out

    def totals(self) -> dict[str, int]:
        out = dict.fromkeys(OUTCOMES, 0)
        for r in self.results:
            out[r.outcome] += 1
        return out

    @property
    def remote(self) -> dict[str, RemoteRecord]:
        """Entry key -> remote state, for every resource now on the server (store it as ``Links.remote``)."""
        return {
            r.key: RemoteRecord(r.remote_id, r.version, r.content_hash)
            for r in self.results
            if r.outcome in (CREATED, EXISTING, UPDATED) and r.remote_id
        }

    @property
    def patient_id(self) -> str | None:
        """The Patient id the push created or found (sandbox targets): the new patient link."""
        if self.patient_key is None:
            return None
        return next((r.remote_id for r in self.results if r.key == self.patient_key and r.remote_id), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "held": self.held,
            "ok": self.ok,
            "totals": self.totals(),
            "by_type": self.counts(),
            "notes": self.notes,
            "failures": [
                {"key": r.key, "type": r.resource_type, "status": r.status, "reason": r.reason} for r in self.failed
            ],
        }


# ----------------------------------------------------------------------------------------------- execution


class _Run:
    def __init__(self, client: FhirClient, plan: Plan) -> None:
        self.client = client
        self.plan = plan
        self.report = PushReport(plan.mode, held=plan.held, notes=list(plan.notes), patient_key=plan.patient_key)
        self.ids: dict[str, dict] = {}  # fullUrl -> {"reference": "Type/id"} for sent requests
        self.failed_urls: set[str] = set()

    # --- bookkeeping --------------------------------------------------------------------------------------

    def done(self, req: PlannedRequest, outcome: str, ident: RemoteIdentity | None, status: int | None) -> None:
        if ident is None:
            ident = self.resolve(req)
        if ident is None:
            self.fail(req, "the server did not reveal the id of the resource", status=status)
            return
        self.ids[req.full_url] = {"reference": f"{req.resource_type}/{ident.id}"}
        self.report.results.append(
            ResourceResult(
                req.key, req.resource_type, outcome, ident.id, ident.version, status, content_hash=req.content_hash
            )
        )

    def fail(
        self,
        req: PlannedRequest,
        reason: str,
        *,
        status: int | None = None,
        outcome: dict | None = None,
        retryable: bool = False,
    ) -> None:
        self.failed_urls.add(req.full_url)
        self.report.results.append(
            ResourceResult(
                req.key,
                req.resource_type,
                FAILED,
                status=status,
                reason=reason,
                operation_outcome=outcome,
                content_hash=req.content_hash,
                retryable=retryable,
            )
        )

    def fail_error(self, req: PlannedRequest, exc: FhirError) -> None:
        if isinstance(exc, FhirHttpError):
            self.fail(
                req,
                exc.diagnostics or f"HTTP {exc.status}",
                status=exc.status,
                outcome=exc.outcome,
                retryable=exc.retryable,
            )
        elif isinstance(exc, FhirTransportError):
            self.fail(req, str(exc), retryable=True)
        else:
            self.fail(req, str(exc), retryable=True)

    def resolve(self, req: PlannedRequest) -> RemoteIdentity | None:
        """Find a resource by its business identifier (when the server answered without an id)."""
        if req.known_id:
            return RemoteIdentity(req.resource_type, req.known_id)
        if not req.identifier_query:
            return None
        try:
            found = self.search(req)
        except FhirError:
            return None
        if len(found) != 1:
            return None
        res = found[0]
        return RemoteIdentity(req.resource_type, res["id"], (res.get("meta") or {}).get("versionId"))

    def search(self, req: PlannedRequest) -> list[dict]:
        key, _, value = (req.identifier_query or "").partition("=")
        return self.client.search_all(req.resource_type, [(key, value)], max_pages=1)

    def prepare(self, req: PlannedRequest) -> dict | None:
        """The resource with references to earlier requests rewritten; None when a dependency failed."""
        if any(dep in self.failed_urls for dep in req.depends_on):
            return None
        resource = dict(req.resource)
        if req.depends_on:
            import copy

            resource = copy.deepcopy(req.resource)
            rewrite_references(resource, self.ids)
        return resource

    # --- modes --------------------------------------------------------------------------------------------

    def run(self) -> PushReport:
        for s in self.plan.skipped:
            self.report.results.append(ResourceResult(s.key, s.resource_type, SKIPPED, reason=s.reason, sent=False))
        for u in self.plan.unchanged:
            self.report.results.append(
                ResourceResult(
                    u.key,
                    u.resource_type,
                    EXISTING,
                    u.remote.id,
                    u.remote.version,
                    content_hash=u.remote.content_hash,
                    sent=False,
                )
            )
        if self.plan.held or self.plan.mode == NONE:
            return self.report
        if self.plan.mode == TRANSACTION:
            self.transaction()
        elif self.plan.mode == BATCH:
            for wave in self.plan.waves():
                self.batch(wave)
        else:
            for req in self.plan.requests:
                self.single(req)
        return self.report

    def transaction(self) -> None:
        reqs = self.plan.requests
        try:
            response = self.client.bundle(self.plan.to_bundle(TRANSACTION))
        except FhirError as exc:
            for req in reqs:
                self.fail_error(req, exc)
            return
        entries = response.get("entry", []) or []
        if len(entries) != len(reqs):
            for req in reqs:
                self.fail(
                    req, f"transaction-response has {len(entries)} entries for {len(reqs)} requests", retryable=True
                )
            return
        for req, entry in zip(reqs, entries, strict=True):
            self.entry_result(req, entry)

    def batch(self, wave: list[PlannedRequest]) -> None:
        ready: list[PlannedRequest] = []
        bodies = []
        for req in wave:
            resource = self.prepare(req)
            if resource is None:
                self.fail(req, "not sent: a resource it references failed", retryable=True)
                continue
            ready.append(req)
            entry = req.bundle_entry()
            entry["resource"] = resource
            bodies.append(entry)
        if not ready:
            return
        try:
            response = self.client.bundle({"resourceType": "Bundle", "type": "batch", "entry": bodies})
        except FhirError as exc:
            for req in ready:
                self.fail_error(req, exc)
            return
        entries = response.get("entry", []) or []
        if len(entries) != len(ready):
            for req in ready:
                self.fail(req, "batch-response entry count mismatch", retryable=True)
            return
        for req, entry in zip(ready, entries, strict=True):
            self.entry_result(req, entry)

    def entry_result(self, req: PlannedRequest, entry: Mapping[str, Any]) -> None:
        response = entry.get("response") or {}
        status_text = str(response.get("status", ""))
        try:
            status = int(status_text.split()[0])
        except (ValueError, IndexError):
            status = 0
        if status >= 400 or status == 0:
            outcome = response.get("outcome")
            diag = ""
            if isinstance(outcome, dict):
                diag = "; ".join(i.get("diagnostics", "") for i in outcome.get("issue", []) or [])
            self.fail(
                req,
                diag or f"entry status {status_text!r}",
                status=status or None,
                outcome=outcome,
                retryable=status in (429,) or status >= 500,
            )
            return
        ident = identity_of(req.resource_type, body=entry.get("resource"), location=response.get("location"))
        if ident is not None and ident.version is None and response.get("etag"):
            from service.exchange.client import version_from_etag

            ident = RemoteIdentity(ident.resource_type, ident.id, version_from_etag(response["etag"]))
        self.done(req, self.outcome_of(req, status), ident, status)

    @staticmethod
    def outcome_of(req: PlannedRequest, status: int) -> str:
        if status == 201:
            return CREATED
        if req.method == "POST":
            return EXISTING  # 200 on a conditional create: the match was there
        return UPDATED

    def single(self, req: PlannedRequest) -> None:
        resource = self.prepare(req)
        if resource is None:
            self.fail(req, "not sent: a resource it references failed", retryable=True)
            return
        try:
            if req.search_first:
                self.search_first(req, resource)
                return
            if req.method == "POST":
                resp = self.client.request(
                    "POST",
                    req.url,
                    json=resource,
                    idempotent=req.guarded,
                    headers={
                        "Prefer": "return=representation",
                        **({"If-None-Exist": req.if_none_exist} if req.if_none_exist else {}),
                    },
                )
            else:
                resp = self.client.request(
                    "PUT",
                    req.url,
                    json=resource,
                    headers={"Prefer": "return=representation", **({"If-Match": req.if_match} if req.if_match else {})},
                )
        except FhirError as exc:
            self.fail_error(req, exc)
            return
        self.done(
            req,
            self.outcome_of(req, resp.status),
            identity_of(req.resource_type, headers=resp.headers, body=resp.body),
            resp.status,
        )

    def search_first(self, req: PlannedRequest, resource: dict) -> None:
        """No conditional interactions on the server: search by identifier, then create or update by id.

        The create is sent without automatic retries; after an ambiguous failure the identifier is searched
        again before another attempt, so a timeout after the server stored the resource never duplicates it.
        """
        last: FhirError | None = None
        for _ in range(max(1, self.client.retry.max_attempts)):
            found = self.search(req)
            if len(found) > 1:
                self.fail(req, f"{len(found)} resources on the server carry identifier {req.identifier_query}")
                return
            try:
                if found:
                    existing = found[0]
                    if req.action == CREATE:
                        self.done(
                            req,
                            EXISTING,
                            RemoteIdentity(
                                req.resource_type, existing["id"], (existing.get("meta") or {}).get("versionId")
                            ),
                            200,
                        )
                        return
                    body = {**resource, "id": existing["id"]}
                    resp = self.client.request(
                        "PUT",
                        f"{req.resource_type}/{existing['id']}",
                        json=body,
                        headers={"Prefer": "return=representation"},
                    )
                    self.done(
                        req, UPDATED, identity_of(req.resource_type, headers=resp.headers, body=resp.body), resp.status
                    )
                    return
                resp = self.client.request(
                    "POST",
                    req.resource_type,
                    json=resource,
                    idempotent=False,
                    headers={"Prefer": "return=representation"},
                )
                self.done(
                    req, CREATED, identity_of(req.resource_type, headers=resp.headers, body=resp.body), resp.status
                )
                return
            except FhirTransportError as exc:
                last = exc
                continue
            except FhirHttpError as exc:
                if exc.retryable:
                    last = exc
                    continue
                self.fail_error(req, exc)
                return
        assert last is not None
        self.fail_error(req, last)


def execute_plan(client: FhirClient, plan: Plan) -> PushReport:
    """Send ``plan`` through ``client``; never raises for server errors (they are in the report)."""
    return _Run(client, plan).run()


# --------------------------------------------------------------------------------------------- whole push


def push_bundle(
    client: FhirClient,
    target: Any,
    bundle: Mapping[str, Any],
    *,
    links: Links | None = None,
    consents: Iterable[PrivacyConsent] = (),
    now: datetime,
    capabilities: Mapping[str, Any] | None = None,
    policy: PushPolicy | None = None,
) -> PushReport:
    """Privacy gate, then plan against the target's CapabilityStatement, then execute.

    ``target`` is a :class:`service.exchange.targets.Target`; ``capabilities`` a cached CapabilityStatement
    (fetched through ``client`` when omitted). A held push returns a report with ``held`` set and sends nothing.
    """
    org = target.organization_identifier
    decision = evaluate_privacy(
        consents,
        OrganizationRef(org.system, org.value) if org else None,
        substance_use=bundle_has_substance_use(bundle),
        now=now,
    )
    if not decision.allowed:
        return PushReport(NONE, held=decision.reason)
    statement = capabilities if capabilities is not None else client.capabilities()
    plan = plan_push(bundle, parse_capabilities(statement), policy or PushPolicy.for_target(target), links)
    return execute_plan(client, plan)


# ---------------------------------------------------------------------------------------------------- pull


@dataclass(frozen=True)
class Difference:
    field: str
    local: Any
    remote: Any


@dataclass(frozen=True)
class CandidateIndication:
    """A Condition found on the target, offered (never imported silently) as an episode indication."""

    condition_id: str
    display: str | None
    icd10cm: str | None
    snomed: str | None
    clinical_status: str | None
    suggested_kind: str | None  # an IndicationKind value, guessed from the ICD-10-CM code


@dataclass
class PullResult:
    found: bool
    patient_id: str | None = None
    version: str | None = None
    resource: dict | None = None
    differences: list[Difference] = field(default_factory=list)
    conditions: list[CandidateIndication] = field(default_factory=list)
    reason: str | None = None  # not found / ambiguous


_ICD10_KINDS = (
    ("F32", "depression"),
    ("F33", "depression"),
    ("F43.1", "ptsd"),
    ("F41.1", "anxiety"),
    ("F42", "ocd"),
    ("G89", "chronic-pain"),
    *((f"F{n}", "substance-use") for n in range(10, 20)),
)


def _suggest_kind(icd10: str | None) -> str | None:
    if not icd10:
        return None
    return next((kind for prefix, kind in _ICD10_KINDS if icd10.upper().startswith(prefix)), None)


def demographic_differences(local: Any, remote: Mapping[str, Any]) -> list[Difference]:
    """Differences between a local ``service.domain.model.Patient`` and a remote Patient (reported only)."""
    name = (remote.get("name") or [{}])[0]
    pairs = [
        ("name.family", local.name.family, name.get("family")),
        ("name.given", list(local.name.given), list(name.get("given", []))),
        ("birthDate", local.birth_date.isoformat(), remote.get("birthDate")),
        ("gender", str(getattr(local.gender, "value", local.gender)), remote.get("gender")),
    ]
    return [Difference(f, lv, rv) for f, lv, rv in pairs if lv != rv]


def pull_patient(
    target_or_client: Any,
    mrn_system: str,
    mrn_value: str,
    *,
    local: Any = None,
    conditions: bool = False,
) -> PullResult:
    """Find the target's Patient by MRN (``identifier=system|value``).

    Returns its id (the link to store), the differences against ``local`` (a domain Patient; never written
    anywhere) and, when ``conditions``, the patient's Conditions as candidate indications.
    """
    if isinstance(target_or_client, FhirClient):
        client, own = target_or_client, False
    else:
        from service.exchange.targets import build_client

        client, own = build_client(target_or_client), True
    try:
        found = client.search_all("Patient", [("identifier", f"{mrn_system}|{mrn_value}")], max_pages=1)
        if not found:
            return PullResult(False, reason="no Patient with that MRN on the target")
        if len(found) > 1:
            return PullResult(False, reason=f"{len(found)} Patients carry that MRN on the target; link explicitly")
        patient = found[0]
        result = PullResult(True, patient["id"], (patient.get("meta") or {}).get("versionId"), patient)
        if local is not None:
            result.differences = demographic_differences(local, patient)
        if conditions:
            for cond in client.search_all("Condition", [("patient", patient["id"])], max_pages=5):
                codings = (cond.get("code") or {}).get("coding", []) or []
                icd = next((c.get("code") for c in codings if "icd-10" in str(c.get("system", ""))), None)
                sct = next((c.get("code") for c in codings if c.get("system") == "http://snomed.info/sct"), None)
                status = next((c.get("code") for c in (cond.get("clinicalStatus") or {}).get("coding", []) or []), None)
                display = (cond.get("code") or {}).get("text") or next(
                    (c.get("display") for c in codings if c.get("display")), None
                )
                result.conditions.append(CandidateIndication(cond["id"], display, icd, sct, status, _suggest_kind(icd)))
        return result
    finally:
        if own:
            client.close()


__all__ = [
    "CREATED",
    "EXISTING",
    "FAILED",
    "SKIPPED",
    "UPDATE",
    "UPDATED",
    "UPSERT",
    "CandidateIndication",
    "Difference",
    "PullResult",
    "PushReport",
    "ResourceResult",
    "demographic_differences",
    "execute_plan",
    "pull_patient",
    "push_bundle",
]
