"""The FHIR R4 (4.0.1) validator of kapfhir: one module per layer, used alike by the mappings' output checks (the
outbound Bundles of service_layer.sync), ``$validate`` and the write path (POST/PUT/PATCH /fhir).

- ``structure``: fhirkit-rs (elements, cardinality, JSON types, primitive formats) plus calendar dates and ids;
- ``bindings``: required code bindings; ``invariants``: the R4 core invariants of what we emit, as direct checks;
- ``kapfhir_profile``: the kapfhir profile rules; ``layers`` runs these four over one typed walk (``typed``);
- ``base``: the base specification from the R4 definitions (``definitions``): every invariant by FHIRPath,
  extensions, references, narrative (``narrative``), UCUM syntax (``ucum``), questionnaires (``questionnaire``);
- ``profiles``: core and US Core (``us_core``) profiles; ``kapfhir_constraints``: kapfhir's StructureDefinitions'
  constraints; ``references``: reference targets from the R4B metadata; ``policy``: the extension write policy;
- ``operation``: ``$validate`` and the write path's checks, with the domain rules the caller passes.

Pure: FHIR definitions, fhir.resources metadata, fhirkit, fhirpathpy and ``mappings`` (terminology, conformance
resources, the OperationOutcome builder); nothing from ``service`` (.importlinter).
"""

from validation.invariants import DIRECT, INVARIANTS, compiled_invariants
from validation.issues import Issue, operation_outcome
from validation.layers import (
    CHECKS,
    FAST_LAYERS,
    LAYERS,
    check_bindings,
    check_invariants,
    check_profile,
    check_structure,
    invariant_failures,
    validate_bundle,
    validate_layers,
)
from validation.operation import DomainRules, r4_type, validate, validate_for_write
from validation.typed import preload_models

__all__ = [
    "CHECKS",
    "DIRECT",
    "FAST_LAYERS",
    "INVARIANTS",
    "LAYERS",
    "DomainRules",
    "Issue",
    "check_bindings",
    "check_invariants",
    "check_profile",
    "check_structure",
    "compiled_invariants",
    "invariant_failures",
    "operation_outcome",
    "preload_models",
    "r4_type",
    "validate",
    "validate_bundle",
    "validate_for_write",
    "validate_layers",
]
