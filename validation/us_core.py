# ruff: noqa: E501 - FHIRPath expressions and texts transcribed whole from the IG
"""US Core 6.1.0: the profiles and extensions kapfhir knows by name.

No package on PyPI or npm ships the US Core 6.1.0 package (hl7.fhir.us.core is published only on the FHIR package
registry, which this service does not reach), so kapfhir keeps the facts it needs: each profile's canonical URL and
the resource type it constrains, and each extension's URL, context and value types (from the published IG,
https://hl7.org/fhir/us/core/STU6.1/, V: US Core 6.1.0 artifacts list). A profile that claims a US Core URL not in
this table does not exist in 6.1.0 and is reported as unknown. The rules checked for a claimed US Core profile are
the base specification plus ``US_CORE_INVARIANTS``; slicing and must-support are not checked (said as information).
"""

from __future__ import annotations

BASE = "http://hl7.org/fhir/us/core/StructureDefinition/"
VERSION = "6.1.0"

# profile id -> resource type it constrains
PROFILES: dict[str, str] = {
    "pediatric-bmi-for-age": "Observation",
    "pediatric-weight-for-height": "Observation",
    "us-core-allergyintolerance": "AllergyIntolerance",
    "us-core-blood-pressure": "Observation",
    "us-core-bmi": "Observation",
    "us-core-body-height": "Observation",
    "us-core-body-temperature": "Observation",
    "us-core-body-weight": "Observation",
    "us-core-careplan": "CarePlan",
    "us-core-careteam": "CareTeam",
    "us-core-condition-encounter-diagnosis": "Condition",
    "us-core-condition-problems-health-concerns": "Condition",
    "us-core-coverage": "Coverage",
    "us-core-diagnosticreport-lab": "DiagnosticReport",
    "us-core-diagnosticreport-note": "DiagnosticReport",
    "us-core-documentreference": "DocumentReference",
    "us-core-encounter": "Encounter",
    "us-core-goal": "Goal",
    "us-core-head-circumference": "Observation",
    "us-core-heart-rate": "Observation",
    "us-core-immunization": "Immunization",
    "us-core-implantable-device": "Device",
    "us-core-location": "Location",
    "us-core-medication": "Medication",
    "us-core-medicationdispense": "MedicationDispense",
    "us-core-medicationrequest": "MedicationRequest",
    "us-core-observation-clinical-result": "Observation",
    "us-core-observation-lab": "Observation",
    "us-core-observation-occupation": "Observation",
    "us-core-observation-pregnancyintent": "Observation",
    "us-core-observation-pregnancystatus": "Observation",
    "us-core-observation-screening-assessment": "Observation",
    "us-core-observation-sexual-orientation": "Observation",
    "us-core-organization": "Organization",
    "us-core-practitioner": "Practitioner",
    "us-core-practitionerrole": "PractitionerRole",
    "us-core-procedure": "Procedure",
    "us-core-provenance": "Provenance",
    "us-core-pulse-oximetry": "Observation",
    "us-core-questionnaireresponse": "QuestionnaireResponse",
    "us-core-relatedperson": "RelatedPerson",
    "us-core-respiratory-rate": "Observation",
    "us-core-simple-observation": "Observation",
    "us-core-smokingstatus": "Observation",
    "us-core-specimen": "Specimen",
    "us-core-vital-signs": "Observation",
    "head-occipital-frontal-circumference-percentile": "Observation",
    "us-core-patient": "Patient",
    "us-core-servicerequest": "ServiceRequest",
}

# extension id -> (context element paths, value types; () for a complex extension)
EXTENSIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "us-core-birthsex": (("Patient",), ("code",)),
    "us-core-direct": (("ContactPoint",), ("boolean",)),
    "us-core-ethnicity": (("Patient", "RelatedPerson", "Person", "Practitioner", "FamilyMemberHistory"), ()),
    "us-core-extension-questionnaire-uri": (("QuestionnaireResponse.questionnaire",), ("uri",)),
    "us-core-genderIdentity": (("Patient", "RelatedPerson", "Person", "Practitioner"), ("CodeableConcept",)),
    "us-core-jurisdiction": (("Element",), ("CodeableConcept",)),
    "us-core-race": (("Patient", "RelatedPerson", "Person", "Practitioner", "FamilyMemberHistory"), ()),
    "us-core-sex": (("Patient",), ("code",)),
    "us-core-tribal-affiliation": (("Patient", "RelatedPerson", "Person", "Practitioner", "FamilyMemberHistory"), ()),
    "uscdi-requirement": (("ElementDefinition",), ("boolean",)),
}

# profile id -> (element id, key, severity, FHIRPath, human): the constraints each profile adds (its differential).
US_CORE_INVARIANTS: dict[str, tuple[tuple[str, str, str, str, str], ...]] = {
    "us-core-coverage": (
        (
            "Coverage",
            "us-core-15",
            "error",
            "identifier.type.coding.where(system='http://terminology.hl7.org/CodeSystem/v2-0203' and code='MB').exists() or subscriberId.exists()",
            "Member Id in Coverage.identifier or Coverage.subscriberId SHALL be present",
        ),
    ),
    "us-core-diagnosticreport-lab": (
        (
            "DiagnosticReport",
            "us-core-8",
            "error",
            "(status='partial' or status='preliminary' or status='final' or status='amended' or status='corrected' or status='appended' ) implies effective.exists()",
            "effective[x] SHALL be present if the status is 'partial', 'preliminary', 'final', 'amended', 'corrected' or 'appended'",
        ),
        (
            "DiagnosticReport",
            "us-core-9",
            "error",
            "(status='partial' or status='preliminary' or status='final' or status='amended' or status='corrected' or status='appended' ) implies issued.exists()",
            "issued SHALL be present if the status is 'partial', 'preliminary', 'final', 'amended', 'corrected' or 'appended'",
        ),
    ),
    "us-core-diagnosticreport-note": (
        (
            "DiagnosticReport",
            "us-core-10",
            "error",
            "(status='partial' or status='preliminary' or status='final' or status='amended' or status='corrected' or status='appended' ) implies effective.exists()",
            "effective[x] SHALL be present if the status is 'partial', 'preliminary', 'final', 'amended', 'corrected' or 'appended'",
        ),
    ),
    "us-core-documentreference": (
        (
            "DocumentReference.content.attachment",
            "us-core-6",
            "error",
            "url.exists() or data.exists()",
            "DocumentReference.content.attachment.url or DocumentReference.content.attachment.data or both SHALL be present.",
        ),
    ),
    "us-core-immunization": (
        (
            "Immunization",
            "us-core-5",
            "warning",
            "vaccineCode.coding.where(system='http://hl7.org/fhir/sid/ndc').empty()",
            "SHOULD have a translation to the NDC value set",
        ),
    ),
    "us-core-medicationdispense": (
        (
            "MedicationDispense",
            "us-core-20",
            "error",
            "status='completed' implies whenHandedOver.exists()",
            'whenHandedOver SHALL be present if the status is "completed"',
        ),
    ),
    "us-core-medicationrequest": (
        (
            "MedicationRequest",
            "us-core-21",
            "error",
            "(intent='order' or intent='original-order' or intent='reflex-order'or intent='filler-order' or intent='instance-order') implies requester.exists()",
            'requester SHALL be present if intent is "order"',
        ),
    ),
    "us-core-observation-clinical-result": (
        (
            "Observation",
            "us-core-2",
            "error",
            "(component.empty() and hasMember.empty()) implies (dataAbsentReason.exists() or value.exists())",
            "If there is no component or hasMember element then either a value[x] or a data absent reason must be present",
        ),
        (
            "Observation.effective[x]",
            "us-core-1",
            "error",
            "$this is DateTime implies $this.toString().length() >= 10",
            "Datetime must be at least to day.",
        ),
        (
            "Observation.value[x]",
            "us-core-3",
            "error",
            "value.ofType(Quantity).system.empty() or value.ofType(Quantity).system = 'http://unitsofmeasure.org'",
            "SHALL use UCUM for coded quantity units.",
        ),
    ),
    "us-core-observation-lab": (
        (
            "Observation.value[x]",
            "us-core-4",
            "warning",
            "value.ofType(CodeableConcept).coding.system.empty() or value.ofType(CodeableConcept).coding.system = 'http://snomed.info/sct'",
            "SHOULD use Snomed CT for coded Results",
        ),
    ),
    "us-core-observation-screening-assessment": (
        (
            "Observation",
            "us-core-2",
            "error",
            "(component.empty() and hasMember.empty()) implies (dataAbsentReason.exists() or value.exists())",
            "If there is no component or hasMember element then either a value[x] or a data absent reason must be present",
        ),
        (
            "Observation",
            "us-core-3",
            "error",
            "value.ofType(Quantity).system.empty() or value.ofType(Quantity).system = 'http://unitsofmeasure.org'",
            "SHALL use UCUM for coded quantity units.",
        ),
        (
            "Observation.effective[x]",
            "us-core-1",
            "error",
            "$this is DateTime implies $this.toString().length() >= 10",
            "Datetime must be at least to day.",
        ),
    ),
    "us-core-observation-sexual-orientation": (
        (
            "Observation",
            "us-core-2",
            "error",
            "(component.empty() and hasMember.empty()) implies (dataAbsentReason.exists() or value.exists())",
            "If there is no component or hasMember element then either a value[x] or a data absent reason must be present",
        ),
    ),
    "us-core-organization": (
        ("Organization.identifier:NPI", "us-core-16", "error", "value.matches('^[0-9]{10}$')", "NPI must be 10 digits"),
        (
            "Organization.identifier:NPI",
            "us-core-17",
            "error",
            "(((select(value.substring(0,1).toInteger()).select(iif($this<5, $this*2, (($this*2)-9))))+(value.substring(1,1).toInteger())+(select(value.substring(2,1).toInteger()).select(iif($this<5, $this*2, (($this*2)-9))))+(value.substring(3,1).toInteger())+(select(value.substring(4,1).toInteger()).select(iif($this<5, $this*2, (($this*2)-9))))+(value.substring(5,1).toInteger())+(select(value.substring(6,1).toInteger()).select(iif($this<5, $this*2, (($this*2)-9))))+(value.substring(7,1).toInteger())+(select(value.substring(8,1).toInteger()).select(iif($this<5, $this*2, (($this*2)-9))))+(value.substring(9,1).toInteger()) + 24)mod 10=0)",
            "NPI check digit must be valid (Luhn algorithm check)",
        ),
        (
            "Organization.identifier:CLIA",
            "us-core-18",
            "error",
            "value.matches('^[0-9]{2}D[0-9]{7}$')",
            'CLIA number must be 10 digits with a letter "D" in third position',
        ),
        ("Organization.identifier:NAIC", "us-core-19", "error", "value.matches('^[0-9]{5}$')", "NAIC must be 5 digits"),
    ),
    "us-core-practitioner": (
        ("Practitioner.identifier:NPI", "us-core-16", "error", "value.matches('^[0-9]{10}$')", "NPI must be 10 digits"),
        (
            "Practitioner.identifier:NPI",
            "us-core-17",
            "error",
            "(((select(value.substring(0,1).toInteger()).select(iif($this<5, $this*2, (($this*2)-9))))+(value.substring(1,1).toInteger())+(select(value.substring(2,1).toInteger()).select(iif($this<5, $this*2, (($this*2)-9))))+(value.substring(3,1).toInteger())+(select(value.substring(4,1).toInteger()).select(iif($this<5, $this*2, (($this*2)-9))))+(value.substring(5,1).toInteger())+(select(value.substring(6,1).toInteger()).select(iif($this<5, $this*2, (($this*2)-9))))+(value.substring(7,1).toInteger())+(select(value.substring(8,1).toInteger()).select(iif($this<5, $this*2, (($this*2)-9))))+(value.substring(9,1).toInteger()) + 24)mod 10=0)",
            "NPI check digit must be valid (Luhn algorithm check)",
        ),
    ),
    "us-core-practitionerrole": (
        (
            "PractitionerRole",
            "pd-1",
            "error",
            "telecom or endpoint",
            "SHALL have contact information or a reference to an Endpoint",
        ),
        (
            "PractitionerRole",
            "us-core-13",
            "error",
            "practitioner or organization or healthcareService or location",
            "SHALL have a practitioner, an organization, a healthcare service, or a location.",
        ),
    ),
    "us-core-procedure": (
        (
            "Procedure",
            "us-core-7",
            "error",
            "(status='completed' or status='in-progress') implies performed.exists()",
            "Performed SHALL be present if the status is 'completed' or 'in-progress'",
        ),
    ),
    "us-core-relatedperson": (
        (
            "RelatedPerson",
            "us-core-14",
            "error",
            "name.exists() or relationship.exists()",
            "Either a name or a relationship SHALL be provided (or both)",
        ),
    ),
    "us-core-smokingstatus": (
        (
            "Observation.value[x]",
            "us-core-3",
            "error",
            "value.ofType(Quantity).system.empty() or value.ofType(Quantity).system = 'http://unitsofmeasure.org'",
            "SHALL use UCUM for coded quantity units.",
        ),
    ),
    "us-core-patient": (
        (
            "Patient.name",
            "us-core-6",
            "error",
            "(family.exists() or given.exists()) xor extension.where(url='http://hl7.org/fhir/StructureDefinition/data-absent-reason').exists()",
            "At least name.given and/or name.family are present or, if neither is available, the Data Absent Reason Extension is present.",
        ),
    ),
}
