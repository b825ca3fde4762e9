"""The base specification (FHIR R4 4.0.1) checks of any resource, driven by the core definitions.

What the HL7 reference validator checks without terminology, beside fhirkit's structure (elements, cardinality, JSON
types, primitive formats):
- every invariant of the core resources and datatypes (``constraint`` of the snapshots), FHIRPath evaluated where it
  applies, with ``%resource`` the resource holding the element (a contained resource for its own elements) and
  ``%rootResource`` the resource that contains it; best-practice invariants are warnings;
- primitives: the 1 MB string limit, base64 content, Attachment ``size`` and ``hash`` against the data;
- extensions: a core extension's context and value type, kapfhir's and US Core's extensions; an extension nobody
  defines is not allowed (as the reference treats it), except the cross-version and example namespaces;
- references: target types of Reference and canonical elements, contained (``#id``) references, and resolution inside
  a Bundle or Parameters (a reference to something the container should hold and does not is an error);
- UCUM syntax of Quantity unit codes.
Terminology (value sets beyond the required code bindings, display names) is not checked: ``TERMINOLOGY_NOTE``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import fhirpathpy
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models as fhirpath_models

from validation import narrative, questionnaire, ucum
from validation import us_core as uc
from validation.definitions import CORE, Constraint, Definitions, ElementDef, ExtensionDef, extension_def, load
from validation.invariants import DIRECT, later_than
from validation.issues import Issue

TERMINOLOGY_NOTE = (
    "Terminology not checked: codes are checked only against required bindings to FHIR-defined code systems; "
    "value-set membership of other bindings, display names and external code systems (SNOMED CT, LOINC, RxNorm) "
    "need a terminology server kapfhir does not hold offline"
)
MAX_STRING_BYTES = 1024 * 1024
# Handled directly (faster, and FHIRPath engines differ on them): ele-1 (empty elements), ext-1, dom-2..dom-5
# (contained resources), per-1 (dateTime comparison with offsets). dom-6 is best practice the reference only reports
# on request; txt-1/txt-2 need an XHTML checker.
_DIRECT_KEYS = frozenset({"ele-1", "ext-1", "dom-2", "dom-3", "dom-4", "dom-5", "dom-6", "per-1", "txt-1", "txt-2"})
# txt-1 and txt-2 are checked by validation.narrative


def _ref_1(value: dict, scope: _Scope) -> bool:
    """ref-1: a local reference (#id) names a contained resource of %rootResource (a bare '#' is the container)."""
    ref = value.get("reference")
    if not isinstance(ref, str) or not ref.startswith("#") or ref == "#":
        return True
    return ref[1:] in _contained_of(scope.root) or ref[1:] in scope.contained


def _qty_3(value: dict, scope: _Scope) -> bool:
    return not (value.get("code") not in (None, "") and value.get("system") in (None, ""))


def _direct(key: str) -> Callable[[dict, _Scope], bool] | None:
    """Python equivalents of the FHIRPath of the invariants checked most often (tests/mappings/test_validation.py
    proves obs-6 and obs-7 agree with fhirpathpy; ref-1 and qty-3 are tested in tests/fhir/test_validate_reference)."""
    table: dict[str, Callable[[dict, _Scope], bool]] = {
        "ref-1": _ref_1,
        "qty-3": _qty_3,
        "obs-6": lambda v, _s: DIRECT["obs-6"](v),
        "obs-7": lambda v, _s: DIRECT["obs-7"](v),
    }
    return table.get(key)


_XVER = re.compile(r"http://hl7\.org/fhir/[0-9]\.[0-9]/StructureDefinition/extension-")
# Namespaces the reference validator lets through without a definition (examples and its own tooling).
_ALLOWED_UNKNOWN = (
    "example.org",
    "acme.com",
    "nema.org",
    "http://hl7.org/fhir/tools/StructureDefinition/",
)
_TYPED_REFERENCE = re.compile(r"(?:(.*)/)?([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?")
# a RESTful fullUrl: [base]/Type/id (R4 Bundle "fullUrl": "the fullUrl SHALL be the same as the resource's id")
_FULL_URL = re.compile(r"https?://\S+/([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})")
_QUANTITIES = frozenset({"Quantity", "Age", "Count", "Distance", "Duration", "MoneyQuantity", "SimpleQuantity"})


def _has_value(inputs: list) -> list[bool]:
    return [len(inputs) == 1 and isinstance(inputs[0], str | int | float | bool)]


_FHIRPATH_OPTIONS = {
    "userInvocationTable": {
        # FHIRPath functions fhirpathpy 2.2.4 lacks that core invariants use
        "hasValue": {"fn": _has_value, "arity": {0: []}},
        "htmlChecks": {"fn": lambda inputs: [True], "arity": {0: []}},
        # trace() would print to stdout
        "trace": {"fn": lambda inputs, *_: inputs, "arity": {1: ["String"], 2: ["String", "AnyAtRoot"]}},
    }
}


# FHIRPath System types that R4 invariants test FHIR primitives against (``answer is Boolean``, que-7): the
# reference engine converts a FHIR boolean to System.Boolean; fhirpathpy 2.2.4 answers false, so the expression is
# given the FHIR type instead (same meaning for FHIR data).
_SYSTEM_TYPES = {
    "Boolean": "boolean",
    "String": "string",
    "Integer": "integer",
    "Decimal": "decimal",
    "Date": "date",
    "DateTime": "dateTime",
    "Time": "time",
}
_SYSTEM_TYPE_USE = re.compile(r"\b(is|as)\s+(?:System\.)?(Boolean|String|Integer|Decimal|DateTime|Date|Time)\b")
_SYSTEM_TYPE_CALL = re.compile(
    r"\b(is|as|ofType)\(\s*(?:System\.)?(Boolean|String|Integer|Decimal|DateTime|Date|Time)\s*\)"
)


def fhir_types(expression: str) -> str:
    expression = _SYSTEM_TYPE_USE.sub(lambda m: f"{m.group(1)} {_SYSTEM_TYPES[m.group(2)]}", expression)
    return _SYSTEM_TYPE_CALL.sub(lambda m: f"{m.group(1)}({_SYSTEM_TYPES[m.group(2)]})", expression)


@cache
def _compiled(expression: str) -> Callable | None:
    try:
        return fhirpathpy.compile(fhir_types(expression), fhirpath_models["r4"], _FHIRPATH_OPTIONS)
    except Exception:  # noqa: BLE001 - an expression fhirpathpy cannot parse is reported as not checked
        return None


@dataclass
class _Container:
    """A Bundle or Parameters: what the references inside it may resolve to."""

    by_url: dict[str, dict] = field(default_factory=dict)  # fullUrl -> resource
    by_id: dict[tuple[str, str], dict] = field(default_factory=dict)  # (type, id) -> resource
    canonicals: dict[str, str] = field(default_factory=dict)  # canonical url -> resource type
    by_canonical: dict[str, dict] = field(default_factory=dict)  # canonical url -> resource
    kind: str = "Bundle"
    owner: dict | None = None  # the Bundle or Parameters itself


@dataclass
class _Scope:
    resource: dict  # %resource
    root: dict  # %rootResource
    label: str
    contained: dict[str, dict]


class Walker:
    """One validation of one resource (and what it contains)."""

    def __init__(self, defs: Definitions, own_extensions: dict[str, ExtensionDef]) -> None:
        self.defs = defs
        self.own_extensions = own_extensions
        self.issues: list[Issue] = []
        self.unchecked: set[str] = set()
        self.containers: list[_Container] = []

    def add(self, severity: str, code: str, where: str, text: str) -> None:
        self.issues.append(Issue(severity, code, where, text))

    # --- resources ---------------------------------------------------------------------------------------------

    def resource(self, res: dict, label: str, root: dict | None = None) -> None:
        rtype = res.get("resourceType")
        if not isinstance(rtype, str) or rtype not in self.defs.resources:
            return  # fhirkit reports a missing or unknown resourceType
        contained = {}
        for item in res.get("contained", []) if isinstance(res.get("contained"), list) else []:
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                contained[item["id"]] = item
        scope = _Scope(res, root if root is not None else res, label, contained)
        container = self._container(res) if rtype in ("Bundle", "Parameters") else None
        if container is not None:
            self.containers.append(container)
        try:
            self._domain_resource(res, scope, contained, nested=root is not None and root is not res)
            self._constraints(self.defs.root_constraints.get(rtype, ()), res, rtype, label, scope)
            self._specific(res, rtype, label)
            if rtype == "QuestionnaireResponse":
                self._questionnaire_response(res, label, contained)
            self.node(res, rtype, label, scope, (rtype, "Resource", "DomainResource"))
        finally:
            if container is not None:
                self.containers.pop()

    def _domain_resource(self, res: dict, scope: _Scope, contained: dict[str, dict], nested: bool) -> None:
        items = res.get("contained")
        if not isinstance(items, list):
            return
        label = scope.label
        # dom-3: %resource.descendants() - the references anywhere in the resource, contained resources included
        referenced = set(_references(res))
        self_refs: set[str] = set()
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                continue
            where = f"{label}.contained[{i}]"
            if item.get("contained"):
                self.add(
                    "error",
                    "invariant",
                    where,
                    "dom-2: If the resource is contained in another resource, it SHALL NOT contain nested Resources",
                )
            meta = item.get("meta") if isinstance(item.get("meta"), dict) else {}
            if meta.get("versionId") or meta.get("lastUpdated"):
                self.add(
                    "error",
                    "invariant",
                    where,
                    "dom-4: If a resource is contained in another resource, it SHALL "
                    "NOT have a meta.versionId or a meta.lastUpdated",
                )
            if meta.get("security"):
                self.add(
                    "error",
                    "invariant",
                    where,
                    "dom-5: If a resource is contained in another resource, it SHALL NOT have a security label",
                )
            self_refs.update(_references(item, skip_contained=True))
            cid = item.get("id")
            if (
                isinstance(cid, str)
                and f"#{cid}" not in referenced
                and f"#{cid}" not in self_refs
                and "#" not in (referenced | self_refs)
            ):
                self.add(
                    "error",
                    "invariant",
                    where,
                    "dom-3: If the resource is contained in another resource, it "
                    "SHALL be referred to from elsewhere in the resource or SHALL refer to the containing resource",
                )
            # a contained resource: %resource is itself, %rootResource its container
            self.resource(item, where, root=res)

    def _questionnaire_response(self, res: dict, label: str, contained: dict[str, dict]) -> None:
        url = res.get("questionnaire")
        found = None
        if isinstance(url, str):
            if url.startswith("#"):
                found = contained.get(url[1:])
            else:
                canonical = url.split("|", 1)[0]
                for container in reversed(self.containers):
                    found = container.by_canonical.get(canonical)
                    if found is not None:
                        break
                found = found or own_questionnaires().get(canonical)
        if found is not None and found.get("resourceType") != "Questionnaire":
            found = None
        self.issues.extend(questionnaire.check(res, found, label))

    def _specific(self, res: dict, rtype: str, label: str) -> None:
        """Rules the reference validator applies from the specification's text rather than an invariant."""
        if rtype == "SearchParameter":
            self._search_parameter(res, label)
        elif rtype == "Bundle":
            self._full_urls(res, label)
        elif rtype == "CapabilityStatement":
            self._search_param_types(res, label)
        elif rtype == "StructureDefinition" and res.get("derivation") == "constraint":
            self._differential_paths(res, label)

    def _differential_paths(self, res: dict, label: str) -> None:
        """A profile's differential names elements of the type it constrains: the reference validator cannot
        generate its snapshot otherwise. A choice element is named ``value[x]`` or by one of its types
        (``valueQuantity``); below a type whose elements are not held here (a primitive, a choice left open)
        nothing is judged."""
        differential = res.get("differential")
        elements = differential.get("element") if isinstance(differential, dict) else None
        rtype = res.get("type")
        if not isinstance(elements, list) or rtype not in self.defs.children:
            return
        for i, element in enumerate(elements):
            path = element.get("path") if isinstance(element, dict) else None
            problem = self._unknown_path(rtype, path) if isinstance(path, str) else None
            if problem:
                self.add("error", "structure", f"{label}.differential.element[{i}].path", problem)

    def _unknown_path(self, rtype: str, path: str) -> str | None:
        segments = path.split(".")
        if segments[0] != rtype:
            return f"Error generating Snapshot: the path '{path}' does not start with the type '{rtype}'"
        parent = rtype
        for depth, segment in enumerate(segments[1:], start=1):
            table = self.defs.children.get(parent)
            if table is None:
                return None
            here = ".".join(segments[:depth])
            if segment.endswith("[x]"):
                element = table.get(segment[:-3])
                if element is None or not element.choice:
                    return f"Error generating Snapshot: {here} has no choice element '{segment}'"
                return None  # which type the elements below belong to depends on the profile's type list
            found = self.defs.element(parent, segment)
            if found is None:
                choice = next((n for n, e in table.items() if e.choice and segment.startswith(n)), None)
                if choice is not None:
                    return (
                        f"Error generating Snapshot: The path must be '{here}.{choice}[x]' not '{here}.{segment}' "
                        "when the type list is not constrained"
                    )
                return f"Error generating Snapshot: {here} has no element '{segment}'"
            element, code = found
            if element.content_reference:
                parent = element.content_reference.lstrip("#")
            elif code in ("BackboneElement", "Element") and element.path in self.defs.children:
                parent = element.path
            else:
                parent = code
        return None

    def _search_parameter(self, res: dict, label: str) -> None:
        if res.get("type") == "composite" and len(res.get("component") or []) < 2:
            self.add(
                "error",
                "business-rule",
                label,
                "When the SearchParameter has a type of 'composite', then "
                "the SearchParameter must define two or more components",
            )
        derived = res.get("derivedFrom")
        parent = self.defs.search_parameters.get(derived.split("|", 1)[0]) if isinstance(derived, str) else None
        if parent is not None:
            self._derived_search_parameter(res, parent, label)

    def _derived_search_parameter(self, res: dict, parent: tuple[str, str, tuple[str, ...], str], label: str) -> None:
        """SearchParameter.derivedFrom: "the parameter SHALL be defined the same way" (R4 SearchParameter)."""
        _code, kind, bases, expression = parent
        if isinstance(res.get("type"), str) and res["type"] != kind:
            self.add(
                "error",
                "business-rule",
                label,
                f"The type {res['type']} is different to the type "
                f"{kind} in the derivedFrom SearchParameter {res['derivedFrom']}",
            )
        for name in res["base"] if isinstance(res.get("base"), list) else []:
            if isinstance(name, str) and name not in bases and "Resource" not in bases:
                self.add(
                    "error",
                    "business-rule",
                    label,
                    f"The resource type {name} is not listed as a base "
                    f"in the SearchParameter this is derived from ({res['derivedFrom']})",
                )
        if isinstance(res.get("expression"), str) and res["expression"] != expression:
            self.add(
                "warning",
                "business-rule",
                label,
                f"The expression '{res['expression']}' differs from "
                f"'{expression}' in the derivedFrom SearchParameter {res['derivedFrom']}",
            )

    def _full_urls(self, res: dict, label: str) -> None:
        """A RESTful fullUrl names the entry's resource."""
        entries = res.get("entry")
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
                continue
            full_url, inner = entry.get("fullUrl"), entry["resource"]
            match = _FULL_URL.fullmatch(full_url) if isinstance(full_url, str) else None
            if not (match and isinstance(inner.get("id"), str) and isinstance(inner.get("resourceType"), str)):
                continue
            if match.group(1) != inner["resourceType"] or match.group(2) != inner["id"]:
                # a warning: published examples (US Core 6.1.0's among them) break it and are read anyway
                self.add(
                    "warning",
                    "invalid",
                    f"{label}.entry[{i}]",
                    f"The fullUrl '{full_url}' does not match the resource {inner['resourceType']}/{inner['id']}",
                )

    def _search_param_types(self, res: dict, label: str) -> None:
        """A CapabilityStatement's searchParam has the type of the core SearchParameter it names."""
        for r, rest in enumerate(res.get("rest") or []):
            for j, resource in enumerate(rest.get("resource") or [] if isinstance(rest, dict) else []):
                for k, param in enumerate(resource.get("searchParam") or [] if isinstance(resource, dict) else []):
                    if isinstance(param, dict):
                        self._search_param_type(param, f"{label}.rest[{r}].resource[{j}].searchParam[{k}]")

    def _search_param_type(self, param: dict, where: str) -> None:
        known = self.defs.search_parameters.get(str(param.get("definition", "")).split("|", 1)[0])
        if known is not None and isinstance(param.get("type"), str) and param["type"] != known[1]:
            self.add(
                "error",
                "invalid",
                where,
                f"Type mismatch - SearchParameter '{param['definition']}' type is {known[1]}, "
                f"but type here is {param['type']}",
            )

    # --- elements ----------------------------------------------------------------------------------------------

    def node(self, value: dict, path: str, where: str, scope: _Scope, context: tuple[str, ...]) -> None:
        for key, item in value.items():
            if key == "resourceType" or key == "contained":
                continue
            if key.startswith("_"):
                self._primitive_element(item, key[1:], path, where, scope)
                continue
            found = self.defs.element(path, key)
            if found is None:
                continue  # fhirkit reports unknown elements
            element, code = found
            for i, entry in _items(item):
                here = _at(where, key, i, item)
                if code in self.defs.primitive_regex or code in ("xhtml", "string"):
                    self.primitive(code, entry, here, element)
                elif not isinstance(entry, dict):
                    continue  # fhirkit reports the JSON type
                elif code == "Resource" or (entry.get("resourceType") and element.types == ("Resource",)):
                    self.resource(entry, here)
                else:
                    self.complex(entry, element, code, here, scope, context)

    def _primitive_element(self, item: Any, name: str, path: str, where: str, scope: _Scope) -> None:
        """The element part (id, extensions) of a primitive, such as ``_birthDate``."""
        found = self.defs.element(path, name)
        ctx = (f"{path}.{name}", found[1]) if found else (f"{path}.{name}",)
        for i, element in _items(item):
            if isinstance(element, dict):
                self.node(element, "Element", _at(where, name, i, item), scope, (*ctx, "Element"))

    def complex(self, value: dict, element: ElementDef, code: str, where: str, scope: _Scope, parent: tuple) -> None:
        if not value or set(value) == {"id"}:
            self.add("error", "invariant", where, "ele-1: All FHIR elements must have a @value or children")
        child_path = self._child_path(element, code)
        own = [c for c in element.constraints if c.key not in _DIRECT_KEYS]
        if own:
            self._constraints(own, value, element.path.replace("[x]", ""), where, scope)
        if child_path == code:
            self._constraints(self.defs.root_constraints.get(code, ()), value, code, where, scope)
        self._datatype(value, element, code, where, scope, parent)
        if element.binding and element.binding[0] == "required" and code in ("CodeableConcept", "Coding"):
            self.required_binding(value, code, where, element.binding[1])
        context = (element.path, code) if code not in ("BackboneElement", "Element") else (element.path,)
        if element.content_reference:
            context = (*context, element.content_reference)  # OperationDefinition.parameter.part is a parameter
        self.node(value, child_path, where, scope, (*context, "Element"))

    def _child_path(self, element: ElementDef, code: str) -> str:
        """Where the definitions of the element's children are: the repeated element, the backbone, or the type."""
        if element.content_reference:
            return element.content_reference
        if code in ("BackboneElement", "Element", "") or code not in self.defs.complex_types:
            return element.path
        return code

    def _datatype(self, value: dict, element: ElementDef, code: str, where: str, scope: _Scope, parent: tuple) -> None:
        """The checks of a datatype beside its invariants."""
        if code == "Extension":
            self.extension(value, where, parent, modifier_slot=element.name == "modifierExtension")
        elif code == "Reference":
            self.reference(value, where, element, scope)
        elif code == "Attachment":
            self.attachment(value, where)
        elif code == "Narrative":
            div = value.get("div")
            for problem in narrative.problems(div) if isinstance(div, str) else []:
                self.add("error", "invalid", f"{where}.div", problem)
        elif code == "Period":
            start, end = value.get("start"), value.get("end")
            if isinstance(start, str) and isinstance(end, str) and _later(start, end):
                self.add("error", "invariant", where, "per-1: If present, start SHALL have a lower value than end")
        if code in _QUANTITIES:
            self.quantity(value, where)

    def primitive(self, code: str, value: Any, where: str, element: ElementDef) -> None:
        if not isinstance(value, str):
            return
        if len(value) > MAX_STRING_BYTES // 4 and len(value.encode()) > MAX_STRING_BYTES:
            self.add("error", "invalid", where, "value is longer than permitted maximum length of 1 MB (1048576 bytes)")
            return
        if element.max_length and len(value) > element.max_length:
            self.add("error", "invalid", where, f"value is longer than the maximum length {element.max_length}")
        if code == "base64Binary" and _base64(value) is None:
            self.add("error", "invalid", where, f"The value '{value[:40]}' is not a valid Base64 value")
        elif code == "canonical" and element.targets and "Resource" not in element.targets:
            self.canonical(value, where, element)

    # --- datatypes ---------------------------------------------------------------------------------------------

    def attachment(self, value: dict, where: str) -> None:
        data = value.get("data")
        if not isinstance(data, str):
            return
        raw = _base64(data)
        if raw is None:
            return  # reported on .data
        size = value.get("size")
        if isinstance(size, int) and not isinstance(size, bool) and size != len(raw):
            self.add(
                "error",
                "structure",
                where,
                f"Stated Attachment Size {size} does not match actual attachment size {len(raw)}",
            )
        digest = value.get("hash")
        if isinstance(digest, str) and digest != base64.b64encode(hashlib.sha1(raw).digest()).decode():  # noqa: S324
            self.add("error", "structure", where, "Stated Attachment Hash does not match the SHA-1 of the data")

    def required_binding(self, value: dict, code: str, where: str, value_set: str) -> None:
        """A coding of a code system the required value set includes must be one of its codes (the value sets made
        of FHIR-defined code systems, checked offline as the reference does; others need a terminology server)."""
        includes = self.defs.value_sets.get(value_set)
        if not includes:
            return
        codings = value.get("coding") if code == "CodeableConcept" else [value]
        for i, coding in enumerate(codings if isinstance(codings, list) else []):
            if not isinstance(coding, dict) or not isinstance(coding.get("code"), str):
                continue
            for system, codes in includes:
                if coding.get("system") == system and coding["code"] not in codes:
                    here = f"{where}.coding[{i}]" if code == "CodeableConcept" else where
                    self.add(
                        "error",
                        "code-invalid",
                        here,
                        f"The code '{coding['code']}' is not in the value set "
                        f"{value_set} (required binding) for the system {system}",
                    )

    def quantity(self, value: dict, where: str) -> None:
        code, system = value.get("code"), value.get("system")
        if system == "http://unitsofmeasure.org" and isinstance(code, str):
            problem = ucum.syntax_error(code)
            if problem:
                self.add("error", "code-invalid", f"{where}.code", f"The UCUM code '{code}' is not valid: {problem}")

    def extension(self, ext: dict, where: str, parent: tuple[str, ...], modifier_slot: bool) -> None:
        url = ext.get("url")
        if not isinstance(url, str):
            return  # fhirkit: url is required
        definition = self._extension_definition(url)
        if "://" not in url and not url.startswith("urn:") and "Extension" in parent:
            return  # a sub-extension of a complex extension: checked by its parent
        if definition is None:
            self._undefined_extension(url, where)
            return
        self._extension_place(definition, url, where, parent, modifier_slot)
        value_key = next((k for k in ext if k.startswith("value")), None)
        if value_key is not None:
            self._extension_value(definition, url, value_key, where)
        for i, sub in enumerate(ext.get("extension") or []):
            if (
                isinstance(sub, dict)
                and isinstance(sub.get("url"), str)
                and definition.children
                and "://" not in sub["url"]
            ):
                self._sub_extension(definition, url, sub, f"{where}.extension[{i}]")

    def _undefined_extension(self, url: str, where: str) -> None:
        """An extension nobody defines: not allowed (as the reference treats it), except the cross-version and
        example namespaces; one of HL7's namespace defined after R4 is a warning."""
        if _XVER.match(url) or any(s in url for s in _ALLOWED_UNKNOWN):
            return
        if "://" not in url and not url.startswith("urn:"):
            # a sub-extension of a complex extension (checked by its parent) reached outside one
            self.add("error", "structure", f"{where}.url", f"Extension.url '{url}' must be an absolute URL")
        elif url.startswith(CORE):
            # HL7's namespace: extensions defined after R4 (the HL7 extensions pack, which the reference loads)
            self.add(
                "warning",
                "not-found",
                where,
                f"The extension {url} is not an R4 core extension; it was not checked",
            )
        else:
            self.add("error", "structure", where, f"The extension {url} could not be found so is not allowed here")

    def _extension_place(
        self, definition: ExtensionDef, url: str, where: str, parent: tuple[str, ...], modifier_slot: bool
    ) -> None:
        """The extension's context, and modifierExtension for a modifier extension only."""
        if (
            definition.contexts
            and not _in_context(definition.contexts, parent)
            and not self._canonical_context(definition, parent)
        ):
            allowed = ", ".join(e for _, e in definition.contexts)
            self.add(
                "error",
                "structure",
                where,
                f"The extension {url} is not allowed to be used at this point "
                f"(allowed = {allowed}; this element is {parent[0]})",
            )
        if definition.modifier and not modifier_slot:
            self.add(
                "error",
                "structure",
                where,
                f"The extension {url} is a modifier extension: it must be in modifierExtension",
            )
        elif modifier_slot and not definition.modifier and url.startswith(CORE):
            self.add(
                "error", "structure", where, f"The extension {url} is not a modifier extension: it must be in extension"
            )

    def _extension_value(self, definition: ExtensionDef, url: str, value_key: str, where: str) -> None:
        vtype = self._value_type(value_key)
        if (
            definition.value_types
            and vtype not in definition.value_types
            and not (vtype in ("uri", "url", "canonical") and "uri" in definition.value_types)
        ):
            self.add(
                "error",
                "structure",
                f"{where}.{value_key}",
                f"The type '{vtype}' is not valid for the "
                f"extension {url} (allowed: {', '.join(definition.value_types)})",
            )
        elif not definition.value_types and definition.children:
            self.add(
                "error",
                "structure",
                f"{where}.{value_key}",
                f"The extension {url} is complex: it has sub-extensions, not a value",
            )

    def _sub_extension(self, definition: ExtensionDef, url: str, sub: dict, where: str) -> None:
        types = definition.children.get(sub["url"])
        if types is None:
            self.add("error", "structure", where, f"The sub-extension '{sub['url']}' is not defined by {url}")
            return
        sub_value = next((k for k in sub if k.startswith("value")), None)
        if sub_value and types and self._value_type(sub_value) not in types:
            self.add(
                "error",
                "structure",
                f"{where}.{sub_value}",
                f"The type is not valid for the sub-extension {sub['url']} of {url} (allowed: {', '.join(types)})",
            )

    def _canonical_context(self, definition: ExtensionDef, parent: tuple[str, ...]) -> bool:
        """An extension stated for one canonical resource (StructureDefinition) used on another (ValueSet, CodeSystem):
        the current HL7 extensions pack, which the reference validator loads, states these for every canonical
        resource."""
        canonical = _canonical_types(self.defs)
        stated = {e for _, e in definition.contexts}
        return bool(stated & canonical) and any(p in canonical for p in parent)

    def _value_type(self, key: str) -> str:
        """The type of a value[x] JSON key: valueCoding -> Coding, valueDateTime -> dateTime."""
        suffix = key[5:]
        lowered = suffix[:1].lower() + suffix[1:]
        return lowered if lowered in self.defs.primitive_regex or lowered == "xhtml" else suffix

    def _extension_definition(self, url: str) -> ExtensionDef | None:
        found = self.defs.extensions.get(url) or self.own_extensions.get(url)
        if found is None and url.startswith(uc.BASE) and url[len(uc.BASE) :] in uc.EXTENSIONS:
            contexts, types = uc.EXTENSIONS[url[len(uc.BASE) :]]
            found = ExtensionDef(url, tuple(("element", c) for c in contexts), types, {}, False)
        return found

    def reference(self, value: dict, where: str, element: ElementDef, scope: _Scope) -> None:
        targets = element.targets
        ref = value.get("reference")
        self._declared_type(value.get("type"), targets, where)
        if not isinstance(ref, str) or not ref:
            return
        if ref.startswith("#"):
            self._local_reference(ref, targets, where, scope)
            return
        resolved, searched = self._resolve(ref)
        if resolved is not None:
            self._target_type(resolved.get("resourceType"), targets, where)
        elif self._typed_reference(ref, targets, where) and searched:
            self._unresolved(ref, where, scope)

    def _declared_type(self, declared: Any, targets: tuple[str, ...], where: str) -> None:
        if (
            isinstance(declared, str)
            and targets
            and "Resource" not in targets
            and declared in self.defs.resources
            and declared not in targets
        ):
            self.add(
                "error",
                "structure",
                f"{where}.type",
                f"The type '{declared}' is not a valid Target for this element (must be one of {', '.join(targets)})",
            )

    def _local_reference(self, ref: str, targets: tuple[str, ...], where: str, scope: _Scope) -> None:
        target = scope.resource if ref == "#" else scope.contained.get(ref[1:])
        if target is None and ref != "#":
            # inside a contained resource, '#x' refers to the container's contained resources
            target = _contained_of(scope.root).get(ref[1:])
        if target is None:
            self.add(
                "error",
                "structure",
                f"{where}.reference",
                f"Unable to resolve the local reference '{ref}' to a contained resource",
            )
            return
        self._target_type(target.get("resourceType"), targets, where)

    def _typed_reference(self, ref: str, targets: tuple[str, ...], where: str) -> bool:
        """The target type a ``Type/id`` reference names; False when that is no resource type (reported)."""
        match = _TYPED_REFERENCE.fullmatch(ref)
        if not match or "?" in ref:
            return True
        rtype = match.group(2)
        if rtype in self.defs.resources:
            self._target_type(rtype, targets, where)
        elif not match.group(1):
            self.add(
                "error",
                "structure",
                f"{where}.reference",
                f"'{rtype}' in the reference '{ref}' is not a resource type",
            )
            return False
        return True

    def _unresolved(self, ref: str, where: str, scope: _Scope) -> None:
        """A reference its enclosing Bundle or Parameters should hold and does not."""
        # in a Parameters, a resource's relative reference names another parameter's resource (a reference of the
        # Parameters itself, such as an operation's valueReference, may name anything on the server)
        inside = bool(self.containers) and scope.resource is not self.containers[-1].owner
        if inside and self.containers[-1].kind == "Parameters" and not ref.startswith(("http:", "https:")):
            self.add("error", "structure", f"{where}.reference", f"Unable to resolve resource with reference '{ref}'")
        elif ref.startswith(("urn:uuid:", "urn:oid:")):
            self.add(
                "error",
                "structure",
                f"{where}.reference",
                f"Unable to resolve resource with reference '{ref}' in the Bundle",
            )

    def _target_type(self, rtype: Any, targets: tuple[str, ...], where: str) -> None:
        if isinstance(rtype, str) and targets and "Resource" not in targets and rtype not in targets:
            self.add(
                "error",
                "structure",
                f"{where}.reference",
                f"The type '{rtype}' is not a valid Target for this element (must be one of {', '.join(targets)})",
            )

    def _resolve(self, ref: str) -> tuple[dict | None, bool]:
        """The resource a reference points at in the enclosing Bundles and Parameters, and whether there was one."""
        if not self.containers:
            return None, False
        match = _TYPED_REFERENCE.fullmatch(ref)
        for container in reversed(self.containers):
            if ref in container.by_url:
                return container.by_url[ref], True
            if match:
                hit = container.by_id.get((match.group(2), match.group(3)))
                if hit is not None and not match.group(1):
                    return hit, True
        return None, True

    def canonical(self, value: str, where: str, element: ElementDef) -> None:
        url = value.split("|", 1)[0]
        rtype = None
        for container in reversed(self.containers):
            rtype = container.canonicals.get(url)
            if rtype:
                break
        if rtype is None and url.startswith("http://hl7.org/fhir/"):
            parts = url.split("/")
            if len(parts) >= 2 and parts[-2] in self.defs.resources:
                rtype = parts[-2]
        if rtype and rtype not in element.targets:
            self.add(
                "error",
                "structure",
                where,
                f"The canonical '{value}' refers to a {rtype}, which is not a valid "
                f"target for this element (must be one of {', '.join(element.targets)})",
            )

    def _container(self, res: dict) -> _Container:
        container = _Container(kind=res["resourceType"], owner=res)
        for resource, full_url in _contents(res):
            rtype, rid = resource.get("resourceType"), resource.get("id")
            if isinstance(full_url, str):
                container.by_url[full_url] = resource
            if isinstance(rtype, str) and isinstance(rid, str):
                container.by_id[(rtype, rid)] = resource
                if isinstance(full_url, str):
                    container.by_url.setdefault(full_url, resource)
            if isinstance(resource.get("url"), str) and isinstance(rtype, str):
                container.canonicals[resource["url"]] = rtype
                container.by_canonical[resource["url"]] = resource
        return container

    # --- invariants --------------------------------------------------------------------------------------------

    def _constraints(
        self, constraints: tuple[Constraint, ...] | list, value: dict, base: str, where: str, scope: _Scope
    ) -> None:
        for constraint in constraints:
            if constraint.key in _DIRECT_KEYS:
                continue
            direct = _DIRECT_CHECKS.get(constraint.key)
            ok: bool | None = None
            if direct is not None:
                try:
                    ok = direct(value, scope)
                except (TypeError, AttributeError, KeyError):
                    ok = None  # malformed content: the FHIRPath decides
            if ok is None:
                ok = self.holds(constraint.expression, value, base, scope)
            if ok is None:
                self.unchecked.add(constraint.key)
            elif not ok:
                severity = "warning" if constraint.best_practice else constraint.severity
                self.add(
                    severity,
                    "invariant",
                    where,
                    f"Constraint failed: {constraint.key}: '{constraint.human}' "
                    f"(defined in the base specification; expression: {constraint.expression})",
                )

    def holds(self, expression: str, value: dict, base: str, scope: _Scope) -> bool | None:
        """Whether a FHIRPath invariant holds on ``value`` (typed as ``base``); None when it cannot be evaluated."""
        compiled = _compiled(expression)
        if compiled is None:
            return None
        node = value if "resourceType" in value and "." not in base else ResourceNode.create_node(value, base)
        try:
            result = compiled(node, {"resource": scope.resource, "rootResource": scope.root})
        except Exception:  # noqa: BLE001 - functions fhirpathpy lacks (resolve, conformsTo, memberOf): not checked
            return None
        return result == [True] or result == []  # an empty result does not fail an invariant


_DIRECT_CHECKS = {key: fn for key in ("ref-1", "qty-3", "obs-6", "obs-7") if (fn := _direct(key)) is not None}

# --- helpers ----------------------------------------------------------------------------------------------------


_CANONICAL_TYPES: dict[int, frozenset[str]] = {}


def _canonical_types(defs: Definitions) -> frozenset[str]:
    """Resource types with url, version, name and status: the canonical (conformance and knowledge) resources."""
    found = _CANONICAL_TYPES.get(id(defs))
    if found is None:
        found = frozenset(
            t for t in defs.resources if {"url", "version", "name", "status"} <= set(defs.children.get(t, {}))
        )
        _CANONICAL_TYPES[id(defs)] = found
    return found


def _items(item: Any) -> Iterator[tuple[int, Any]]:
    if isinstance(item, list):
        yield from enumerate(item)
    else:
        yield 0, item


def _at(where: str, key: str, index: int, item: Any) -> str:
    return f"{where}.{key}[{index}]" if isinstance(item, list) else f"{where}.{key}"


def _references(value: Any, skip_contained: bool = False) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if skip_contained and key == "contained":
                continue
            if key == "reference" and isinstance(item, str):
                yield item
            elif isinstance(item, str) and item.startswith("#"):
                yield item  # canonical or uri pointing at a contained resource
            elif isinstance(item, dict | list):
                yield from _references(item)
    elif isinstance(value, list):
        for item in value:
            yield from _references(item)


def _contained_of(resource: dict) -> dict[str, dict]:
    items = resource.get("contained")
    if not isinstance(items, list):
        return {}
    return {c["id"]: c for c in items if isinstance(c, dict) and isinstance(c.get("id"), str)}


def _contents(res: dict) -> Iterator[tuple[dict, str | None]]:
    """(resource, fullUrl) of what a Bundle or Parameters holds, nested Bundles and Parameters included."""
    if res.get("resourceType") == "Bundle":
        entries = res.get("entry")
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
                yield entry["resource"], entry.get("fullUrl")
                if entry["resource"].get("resourceType") in ("Bundle", "Parameters"):
                    yield from _contents(entry["resource"])
    elif res.get("resourceType") == "Parameters" and isinstance(res.get("parameter"), list):
        yield from _parameter_contents(res["parameter"])


def _parameter_contents(parameters: list) -> Iterator[tuple[dict, str | None]]:
    for p in parameters:
        if not isinstance(p, dict):
            continue
        resource = p.get("resource")
        if isinstance(resource, dict):
            full_url = next(
                (
                    x.get("valueUri")
                    for x in p.get("extension") or []
                    if isinstance(x, dict) and x.get("url") == f"{CORE}parameters-fullUrl"
                ),
                None,
            )
            yield resource, full_url
            if resource.get("resourceType") in ("Bundle", "Parameters"):
                yield from _contents(resource)
        if isinstance(p.get("part"), list):
            yield from _parameter_contents(p["part"])


def _in_context(contexts: tuple[tuple[str, str], ...], here: tuple[str, ...]) -> bool:
    names = set(here)
    plain = {n.replace("[x]", "") for n in names}
    return any(_context_allows(kind, expression, names, plain) for kind, expression in contexts)


def _context_allows(kind: str, expression: str, names: set[str], plain: set[str]) -> bool:
    if kind == "fhirpath" or expression in ("Element", "Base"):
        return True
    if kind == "extension":
        return True  # checked where the parent extension is
    if expression in names or expression.replace("[x]", "") in plain:
        return True
    # the reference validator accepts an extension one level above its stated element (R4's own snapshots put
    # structuredefinition-fhir-type on ElementDefinition.type, its context ElementDefinition.type.code)
    if any(expression.startswith(f"{n}.") and "." not in expression[len(n) + 1 :] for n in plain if "." in n):
        return True
    # ... and one used on a part of its stated element (R4's own definitions put regex, stated for
    # ElementDefinition, on ElementDefinition.type): the element still is where the extension's context says
    if any(n.startswith(f"{expression}.") for n in plain):
        return True
    return expression in ("BackboneElement",) and "Element" in names


def _base64(value: str) -> bytes | None:
    compact = "".join(value.split())
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return None


def _later(start: str, end: str) -> bool:
    try:
        return later_than(start, end)  # one dateTime comparison for both layers
    except ValueError:
        return False


# --- entry points ----------------------------------------------------------------------------------------------


@cache
def own_questionnaires() -> dict[str, dict]:
    """kapfhir's published Questionnaires (mappings/conformance), by canonical url."""
    from mappings.conformance import load_all

    return {sd["url"]: sd for sd in load_all().values() if sd.get("resourceType") == "Questionnaire" and sd.get("url")}


@cache
def own_extensions() -> dict[str, ExtensionDef]:
    """kapfhir's extension definitions (mappings/conformance)."""
    from mappings.conformance import load_all

    return {
        url: extension_def(sd)
        for url, sd in load_all().items()
        if sd.get("resourceType") == "StructureDefinition" and sd.get("type") == "Extension"
    }


def check(resource: dict, label: str | None = None) -> tuple[list[Issue], set[str]]:
    """The base-specification issues of one resource (with what it contains) and the invariants not evaluated."""
    walker = Walker(load(), own_extensions())
    walker.resource(resource, label or str(resource.get("resourceType")))
    return walker.issues, walker.unchecked


def holds(expression: str, value: dict, base: str, resource: dict, root: dict | None = None) -> bool | None:
    """One FHIRPath invariant on one element (for profile constraints)."""
    walker = Walker(load(), {})
    return walker.holds(expression, value, base, _Scope(resource, root or resource, "", {}))
