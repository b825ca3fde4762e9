"""Execute a push :class:`~service.exchange.planner.Plan` against a target, and pull a patient by MRN.

``execute_plan(client, plan)`` sends the plan (one transaction; batches in dependency waves; or single
requests in dependency order with references rewritten to the ids the server assigned) and returns a
:class:`PushReport`: per resource the outcome (created / already there / updated / skipped / failed), the
server's id and version, and the content hash, which the caller stores as ``Links.remote`` so the next push
sends only what changed (as ``PUT Type/id`` with ``If-Match`` where the server versions the type).

Real-server differences handled: a matching conditional create answered ``200`` with no ``Location`` (the id is
then taken from the body, else found by searching the identifier); ids in ``Location`` with or without
``_history``; versions from ``ETag`` or ``meta.versionId``; ``/metadata`` as ``application/json``.

Refusals adapted to (seen on Medplum 5.1; each reported in ``PushReport.adaptations``): a resource refused for a
profile claim is sent again without it; a ``PUT`` to a client-assigned id answered 404/405/400/422 is sent as a
create; a conditional create or update refused for its search parameter is sent as a plain create. What was
refused is kept on the client (``FhirClient.learned``), so later pushes through it avoid the refusal up front.
Adaptation rounds are bounded (``MAX_ADAPTATION_ROUNDS``).

``push_bundle(...)`` is the whole job for a worker: privacy gate, CapabilityStatement, plan, execute.
``pull_patient(...)`` finds a Patient by MRN and reports demographic differences (never overwrites).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from mappings import terminology as t
from mappings.bundle import request_bundle
from service.exchange.client import (
    FhirClient,
    FhirError,
    FhirHttpError,
    FhirTransportError,
    RemoteIdentity,
    identity_of,
    retryable_status,
)
from service.exchange.planner import (
    BATCH,
    CREATE,
    CREATE_NOT_PUT,
    NONE,
    PLAIN_CREATE,
    PROFILE_REMOVED,
    TRANSACTION,
    UPDATE,
    UPSERT,
    Adaptation,
    Links,
    Plan,
    PlannedRequest,
    PushPolicy,
    RemoteRecord,
    adaptation_counts,
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
    adaptations: list[Adaptation] = field(default_factory=list)  # what was sent differently for this target

    def adapted(self) -> list[dict[str, Any]]:
        """The adaptations grouped: ``[{kind, type, detail, count}]`` (what the CLI and the sync job show)."""
        return adaptation_counts(self.adaptations)

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
            "adapted": self.adapted(),
            "failures": [
                {"key": r.key, "type": r.resource_type, "status": r.status, "reason": r.reason} for r in self.failed
            ],
        }


# ------------------------------------------------------------------------------------- refusals we adapt to

MAX_ADAPTATION_ROUNDS = 3  # each round changes at least one request; bounded all the same
_REFUSAL_STATUSES = (400, 422)  # how servers refuse content (profile, unsupported search parameter)
_NO_CLIENT_ID_STATUSES = (400, 404, 405, 422)  # a PUT to a new id without updateCreate (Medplum: 404)


def _outcome_text(outcome: Mapping[str, Any] | None) -> str:
    """Everything an OperationOutcome says (diagnostics, details, expression, location), for matching."""
    if not isinstance(outcome, Mapping):
        return ""
    parts: list[str] = []
    for issue in outcome.get("issue", []) or []:
        parts.append(str(issue.get("diagnostics", "")))
        parts.append(str((issue.get("details") or {}).get("text", "")))
        parts.extend(str(x) for x in [*(issue.get("expression") or []), *(issue.get("location") or [])])
    return " ".join(parts)


def _claims(resource: Mapping[str, Any]) -> list[str]:
    return list(((resource.get("meta") or {}).get("profile")) or [])


def refused_claims(req: PlannedRequest, status: int, outcome: Mapping[str, Any] | None, *, whole: bool) -> list[str]:
    """The profile claims of ``req`` a refusal is about: those the OperationOutcome names, or (a single request
    or entry refused at ``meta.profile``) all of them. ``whole``: the refusal is of a whole transaction, so only
    claims it names count."""
    claims = _claims(req.resource)
    if status not in _REFUSAL_STATUSES or not claims:
        return []
    text = _outcome_text(outcome)
    named = [c for c in claims if c.split("|", 1)[0] in text]
    if named or whole:
        return named
    return claims if "meta.profile" in text or "profile" in text.lower() else []


def refused_client_id(req: PlannedRequest, status: int) -> bool:
    """A PUT to a client-assigned new id (not a known server id) that the server would not take."""
    return (
        req.method == "PUT"
        and req.known_id is None
        and "?" not in req.url
        and not req.search_first
        and status in _NO_CLIENT_ID_STATUSES
    )


def _condition(req: PlannedRequest) -> str | None:
    """The search condition of a conditional create (If-None-Exist) or conditional update (``PUT Type?query``)."""
    if req.if_none_exist:
        return req.if_none_exist
    if req.method == "PUT" and "?" in req.url and not req.search_first:
        return req.url.split("?", 1)[1]
    return None


def refused_condition(req: PlannedRequest, status: int, outcome: Mapping[str, Any] | None, *, whole: bool) -> bool:
    """A conditional create or update refused for its search parameter (the server does not support it)."""
    condition = _condition(req)
    if not condition or status not in _REFUSAL_STATUSES:
        return False
    text = _outcome_text(outcome)
    lower = text.lower()
    name = condition.split("=", 1)[0]
    about_condition = "if-none-exist" in lower or "ifnoneexist" in lower or "conditional" in lower
    about_parameter = name in text and ("search" in lower or "param" in lower)
    if whole and req.resource_type not in text:
        return False
    return about_condition or about_parameter


# ----------------------------------------------------------------------------------------------- execution


def _entry_status(status_text: str) -> int:
    """The status code of a Bundle response entry ("201 Created" -> 201); 0 when it has none."""
    try:
        return int(status_text.split()[0])
    except (ValueError, IndexError):
        return 0


def _diagnostics(outcome: Any) -> str:
    """The diagnostics of an entry's OperationOutcome, joined; empty when it carries none."""
    if not isinstance(outcome, dict):
        return ""
    return "; ".join(i.get("diagnostics", "") for i in outcome.get("issue", []) or [])


class _Run:
    def __init__(self, client: FhirClient, plan: Plan) -> None:
        self.client = client
        self.plan = plan
        self.report = PushReport(
            plan.mode,
            held=plan.held,
            notes=list(plan.notes),
            patient_key=plan.patient_key,
            adaptations=list(plan.adaptations),
        )
        self.ids: dict[str, dict] = {}  # fullUrl -> {"reference": "Type/id"} for sent requests
        self.failed_urls: set[str] = set()
        self.learned = getattr(client, "learned", None)
        self.resend: list[PlannedRequest] = []  # refused, adapted, to be sent again (batch and transaction)

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

    def fail_error(self, req: PlannedRequest, exc: FhirError, *, overtaken: bool = False) -> None:
        if isinstance(exc, FhirHttpError):
            self.fail(
                req,
                exc.diagnostics or f"HTTP {exc.status}",
                status=exc.status,
                outcome=exc.outcome,
                retryable=exc.retryable or overtaken or _overtaken(exc.status, [req]),
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

    def adapt(self, req: PlannedRequest, status: int, outcome: Mapping[str, Any] | None, *, whole: bool) -> bool:
        """Change ``req`` so that the target takes it, when the refusal is one kapfhir adapts to (a profile claim,
        a client-assigned id, an unsupported conditional-create parameter). Returns whether it changed."""
        claims = refused_claims(req, status, outcome, whole=whole)
        if claims:
            kept = [c for c in _claims(req.resource) if c not in claims]
            meta = req.resource.setdefault("meta", {})
            if kept:
                meta["profile"] = kept
            else:
                meta.pop("profile", None)
            for claim in claims:
                if self.learned is not None:
                    self.learned.refused_profiles.add(claim.split("|", 1)[0])
                self.report.adaptations.append(
                    Adaptation(
                        PROFILE_REMOVED,
                        req.resource_type,
                        f"profile claim {claim} left out (the target refused the resource for it; sent again)",
                    )
                )
            return True
        if whole:
            if status in (404, 405) and refused_client_id(req, status):
                return self._as_create(req)
        elif refused_client_id(req, status):
            return self._as_create(req)
        if refused_condition(req, status, outcome, whole=whole):
            req.method, req.url, req.if_none_exist, req.guarded = "POST", req.resource_type, None, False
            self.report.adaptations.append(
                Adaptation(
                    PLAIN_CREATE,
                    req.resource_type,
                    f"created without a condition (the target refused the search parameter "
                    f"'{req.identifier_query.split('=', 1)[0]}'); the server's id is remembered"
                    if req.identifier_query
                    else "created without a condition (the target refused the condition)",
                )
            )
            return True
        return False

    def _as_create(self, req: PlannedRequest) -> bool:
        req.method, req.url, req.guarded, req.if_match = "POST", req.resource_type, False, None
        req.resource.pop("id", None)
        if self.learned is not None:
            self.learned.no_client_ids.add(req.resource_type)
        self.report.adaptations.append(
            Adaptation(
                CREATE_NOT_PUT,
                req.resource_type,
                "sent as a create: the target refused the client-assigned id (no updateCreate); the server's id "
                "is remembered",
            )
        )
        return True

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
        self.send_bundle(TRANSACTION, list(self.plan.requests), prepared=False)

    def batch(self, wave: list[PlannedRequest]) -> None:
        self.send_bundle(BATCH, wave, prepared=True)

    def send_bundle(self, kind: str, reqs: list[PlannedRequest], *, prepared: bool) -> None:
        """Send ``reqs`` as one Bundle of ``kind``; requests refused for a reason kapfhir adapts to are changed
        and sent again (a refused transaction whole, refused entries on their own), at most
        ``MAX_ADAPTATION_ROUNDS`` times. ``prepared``: rewrite references to ids assigned by earlier Bundles."""
        for round_ in range(MAX_ADAPTATION_ROUNDS + 1):
            last = round_ == MAX_ADAPTATION_ROUNDS
            ready, entries = self.bundle_entries(reqs, prepared=prepared)
            if not ready:
                return
            try:
                response = self.client.bundle(request_bundle(kind, entries), idempotent=all(r.guarded for r in ready))
            except FhirHttpError as exc:
                if kind == TRANSACTION and not last and self.adapt_transaction(ready, exc):
                    reqs = ready
                    continue
                overtaken = _overtaken(exc.status, ready)  # a transaction refused whole for one entry's If-Match
                for req in ready:
                    self.fail_error(req, exc, overtaken=overtaken)
                return
            except FhirError as exc:
                for req in ready:
                    self.fail_error(req, exc)
                return
            if not self.entry_results(kind, ready, response, adaptable=not last):
                return
            # entries refused one by one (a batch, or a server running transactions as batches): again, alone,
            # with references to what the first round created
            reqs, prepared = self.resend, True

    def bundle_entries(self, reqs: list[PlannedRequest], *, prepared: bool) -> tuple[list[PlannedRequest], list[dict]]:
        """(the requests that can be sent, their Bundle entries); a request whose dependency failed fails here."""
        ready: list[PlannedRequest] = []
        entries = []
        for req in reqs:
            resource = self.prepare(req) if prepared else req.resource
            if resource is None:
                self.fail(req, "not sent: a resource it references failed", retryable=True)
                continue
            ready.append(req)
            entry = req.bundle_entry()
            entry["resource"] = resource
            entries.append(entry)
        return ready, entries

    def adapt_transaction(self, ready: list[PlannedRequest], exc: FhirHttpError) -> bool:
        """A transaction refused whole for a reason kapfhir adapts to: each request is offered the refusal (all of
        them, so every one adapts); True when any changed and the transaction is worth sending again."""
        if exc.retryable:
            return False
        return any([self.adapt(r, exc.status, exc.outcome, whole=True) for r in ready])

    def entry_results(
        self, kind: str, ready: list[PlannedRequest], response: Mapping[str, Any], *, adaptable: bool
    ) -> bool:
        """Record each entry of the response Bundle; True when some were refused for a reason kapfhir adapts to
        (they wait in ``self.resend``)."""
        entries = response.get("entry", []) or []
        if len(entries) != len(ready):
            for req in ready:
                self.fail(req, f"{kind}-response has {len(entries)} entries for {len(ready)} requests", retryable=True)
            return False
        self.resend = []
        for req, entry in zip(ready, entries, strict=True):
            self.entry_result(req, entry, adaptable=adaptable)
        return bool(self.resend)

    def entry_result(self, req: PlannedRequest, entry: Mapping[str, Any], *, adaptable: bool = False) -> None:
        response = entry.get("response") or {}
        status_text = str(response.get("status", ""))
        status = _entry_status(status_text)
        if status >= 400 or status == 0:
            self.entry_refused(req, status, status_text, response.get("outcome"), adaptable=adaptable)
            return
        ident = identity_of(req.resource_type, body=entry.get("resource"), location=response.get("location"))
        if ident is not None and ident.version is None and response.get("etag"):
            from service.exchange.client import version_from_etag

            ident = RemoteIdentity(ident.resource_type, ident.id, version_from_etag(response["etag"]))
        self.done(req, self.outcome_of(req, status), ident, status)

    def entry_refused(
        self, req: PlannedRequest, status: int, status_text: str, outcome: Any, *, adaptable: bool
    ) -> None:
        """A refused entry is adapted and queued to send again, or recorded as failed with the server's
        diagnostics (retryable on the statuses a whole request is retried on: 408, 429 and 5xx)."""
        if adaptable and status and self.adapt(req, status, outcome, whole=False):
            self.resend.append(req)
            return
        self.fail(
            req,
            _diagnostics(outcome) or f"entry status {status_text!r}",
            status=status or None,
            outcome=outcome,
            retryable=retryable_status(status) or _overtaken(status, [req]),
        )

    @staticmethod
    def outcome_of(req: PlannedRequest, status: int) -> str:
        if status == 201:
            return CREATED
        if req.method == "POST":
            return EXISTING  # 200 on a conditional create: the match was there
        return UPDATED

    def single(self, req: PlannedRequest) -> None:
        for round_ in range(MAX_ADAPTATION_ROUNDS + 1):
            resource = self.prepare(req)
            if resource is None:
                self.fail(req, "not sent: a resource it references failed", retryable=True)
                return
            if req.search_first:
                self.search_first(req, resource)
                return
            try:
                resp = self.send_one(req, resource)
            except FhirHttpError as exc:
                last = round_ == MAX_ADAPTATION_ROUNDS
                if not last and not exc.retryable and self.adapt(req, exc.status, exc.outcome, whole=False):
                    continue
                self.fail_error(req, exc)
                return
            except FhirError as exc:
                self.fail_error(req, exc)
                return
            self.done(
                req,
                self.outcome_of(req, resp.status),
                identity_of(req.resource_type, headers=resp.headers, body=resp.body),
                resp.status,
            )
            return

    def send_one(self, req: PlannedRequest, resource: dict) -> Any:
        if req.method == "POST":
            return self.client.request(
                "POST",
                req.url,
                json=resource,
                idempotent=req.guarded,
                headers={
                    "Prefer": "return=representation",
                    **({"If-None-Exist": req.if_none_exist} if req.if_none_exist else {}),
                },
            )
        return self.client.request(
            "PUT",
            req.url,
            json=resource,
            headers={"Prefer": "return=representation", **({"If-Match": req.if_match} if req.if_match else {})},
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
                if self.adapt(req, exc.status, exc.outcome, whole=False):  # a refused profile claim: without it
                    last = exc
                    resource = self.prepare(req) or resource
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
    policy = policy or PushPolicy.for_target(target)
    learned = getattr(client, "learned", None)
    if learned is not None:  # what this target refused earlier in this process is adapted up front
        policy = replace(
            policy,
            drop_profiles=policy.drop_profiles | frozenset(learned.refused_profiles),
            no_client_ids=policy.no_client_ids | frozenset(learned.no_client_ids),
        )
    plan = plan_push(bundle, parse_capabilities(statement), policy, links)
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
                result.conditions.append(candidate_indication(cond))
        return result
    finally:
        if own:
            client.close()


def candidate_indication(cond: Mapping[str, Any]) -> CandidateIndication:
    """A target's Condition as a candidate indication: its ICD-10-CM and SNOMED CT codes, clinical status and
    display, with the indication kind the ICD-10-CM code suggests."""
    codings = (cond.get("code") or {}).get("coding", []) or []
    icd = next((c.get("code") for c in codings if "icd-10" in str(c.get("system", ""))), None)
    sct = next((c.get("code") for c in codings if c.get("system") == t.SNOMED), None)
    status = next((c.get("code") for c in (cond.get("clinicalStatus") or {}).get("coding", []) or []), None)
    display = (cond.get("code") or {}).get("text") or next(
        (c.get("display") for c in codings if c.get("display")), None
    )
    return CandidateIndication(cond["id"], display, icd, sct, status, _suggest_kind(icd))


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


def _overtaken(status: int | None, reqs: list[PlannedRequest]) -> bool:
    """A 412 to an update sent with ``If-Match``: the version kapfhir knew was overtaken, most often by another of its
    workers pushing a resource that several episodes share (the clinic's Organization, a practitioner, the patient)
    and recording the new version as it went. A later attempt plans from the versions recorded by then, so it is
    retried, not given up at once; an edit made on the target keeps refusing until the attempts run out."""
    return status == 412 and any(r.if_match for r in reqs)
