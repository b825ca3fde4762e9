"""Exchange with EHRs over FHIR REST: client, auth, targets, capability-aware planning, push/pull, privacy gate.

Layers (each usable on its own; the outbox/worker/CLI build on them):

* :mod:`service.exchange.client`   -- ``FhirClient``: one ``requests.Session`` per target, retries, typed errors.
* :mod:`service.exchange.auth`     -- none / static bearer / client credentials / SMART Backend Services.
* :mod:`service.exchange.targets`  -- ``Target`` configuration (file + env), presets, ``build_client``.
* :mod:`service.exchange.planner`  -- pure: CapabilityStatement + policy + links + Bundle -> ``Plan``.
* :mod:`service.exchange.push`     -- executes a ``Plan`` (idempotent), ``PushReport``; ``pull_patient``.
* :mod:`service.exchange.privacy`  -- pure privacy gate (patient-privacy Consent, 42 CFR Part 2).
"""
