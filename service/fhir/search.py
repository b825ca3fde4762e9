"""FHIR search over the projection (SQL), the conformance resources (in memory) and the audit trail (SQL)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, and_, bindparam, func, not_, or_, select
from sqlalchemy.orm import Session

from service.adapters import orm
from service.adapters.fhir_store import fhir_resources, fhir_search_index
from service.domain.limits import MAX_OFFSET, MAX_SEARCH_VALUE, ascii_int
from service.fhir.registry import TYPES, Param
from service.fhir.values import BadValue, date_range, index_rows

RESULT_PARAMS = {"_count", "_offset", "_sort", "_include", "_format", "_total", "_summary", "_elements"}
DEFAULT_COUNT, MAX_COUNT = 20, 200
_PREFIX = re.compile(r"^(eq|ne|gt|lt|ge|le)(?=\d)")


class SearchError(ValueError):
    def __init__(self, expression: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.expression, self.message, self.status = expression, message, status


@dataclass(frozen=True)
class Criterion:
    param: Param
    modifier: str | None
    values: tuple[Any, ...]  # parsed: token (system|None|'*', code|None), date (prefix, lo, hi), text


@dataclass
class Query:
    resource_type: str
    criteria: list[Criterion] = field(default_factory=list)
    count: int = DEFAULT_COUNT
    offset: int = 0
    sort: list[tuple[str, bool]] = field(default_factory=list)  # (param, descending)
    include: list[Param] = field(default_factory=list)


def _token(text: str) -> tuple[str | None, str | None]:
    if "|" in text:
        system, code = text.split("|", 1)
        return (system if system else ""), (code or None)
    return None, text


def parse(resource_type: str, args: list[tuple[str, str]], *, base: str | None = None) -> Query:
    """A search's query string as a Query: result parameters (page, sort, include), then one criterion per
    search parameter. ``base``: this server's FHIR base URL, under which an absolute reference is a local one."""
    params = TYPES[resource_type].params
    query = Query(resource_type)
    for name, raw in args:
        if name == "_format":
            continue
        if name == "_count":
            query.count = parse_count(raw)
        elif name == "_offset":
            query.offset = parse_offset(raw)
        elif name == "_sort":
            query.sort += _parse_sort(resource_type, params, raw)
        elif name == "_include":
            query.include.append(_parse_include(resource_type, params, raw))
        elif name in RESULT_PARAMS:
            raise SearchError(name, f"the result parameter {name} is not supported")
        else:
            query.criteria.append(_parse_criterion(resource_type, params, name, raw, base))
    return query


def _parse_sort(resource_type: str, params: dict[str, Param], raw: str) -> list[tuple[str, bool]]:
    """``_sort`` keys as (parameter, descending): _id, _lastUpdated or a date parameter of the type."""
    keys = []
    for key in raw.split(","):
        desc = key.startswith("-")
        code = key.lstrip("-")
        if code not in ("_id", "_lastUpdated") and not (code in params and params[code].type == "date"):
            raise SearchError(
                "_sort", f"cannot sort {resource_type} by {code!r}: use _id, _lastUpdated or a date parameter"
            )
        keys.append((code, desc))
    return keys


def _parse_include(resource_type: str, params: dict[str, Param], raw: str) -> Param:
    """``_include=Type:param``: a reference parameter of the searched type itself."""
    parts = raw.split(":")
    if len(parts) != 2 or parts[0] != resource_type or parts[1] not in params or params[parts[1]].type != "reference":
        raise SearchError("_include", f"unsupported _include {raw!r}")
    return params[parts[1]]


def _parse_criterion(
    resource_type: str, params: dict[str, Param], name: str, raw: str, base: str | None = None
) -> Criterion:
    """A search parameter (``code`` or ``code:exact`` on a string) with its comma-separated values (OR)."""
    code, _, modifier = name.partition(":")
    param = params.get(code)
    if param is None:
        raise SearchError(
            name,
            f"unknown search parameter {code!r} for {resource_type}; supported: {', '.join(sorted(params))}",
        )
    if modifier and not (modifier == "exact" and param.type == "string"):
        raise SearchError(name, f"the modifier :{modifier} is not supported on {code}")
    values = []
    for text in raw.split(","):
        if text == "":
            raise SearchError(name, f"empty value for {code}")
        values.append(_parse_value(param, text, name, base))
    return Criterion(param, modifier or None, tuple(values))


def parse_count(raw: str) -> int:
    value = ascii_int(raw)
    if value is None:
        raise SearchError("_count", f"_count must be a non-negative integer written in ASCII digits, got {raw[:40]!r}")
    return min(value, MAX_COUNT)


def parse_offset(raw: str) -> int:
    value = ascii_int(raw)
    if value is None or value > MAX_OFFSET:
        raise SearchError("_offset", f"_offset must be an integer from 0 to {MAX_OFFSET}, got {raw[:40]!r}")
    return value


def _parse_value(param: Param, text: str, name: str, base: str | None = None) -> Any:
    if len(text) > MAX_SEARCH_VALUE:
        raise SearchError(name, f"a search value has at most {MAX_SEARCH_VALUE} characters")
    if param.type == "reference" and base and text.startswith(base + "/"):
        return text[len(base) + 1 :]  # this server's resource by its absolute URL: stored as a relative reference
    if param.type == "date":
        m = _PREFIX.match(text)
        prefix = m.group(1) if m else "eq"
        try:
            lo, hi = date_range(text[len(m.group(1)) :] if m else text)
        except BadValue as exc:
            raise SearchError(name, str(exc)) from None
        return prefix, lo, hi
    if param.type == "token" or param.code == "_id":
        return _token(text)
    if param.type == "string":
        return text.lower()
    return text


def reference_codes(param: Param, value: str) -> list[str]:
    """The stored references a reference search value matches. ``Type/id`` or an absolute URL: itself. A bare id
    names a local (relative) reference to a resource of any type the parameter may target (FHIR R4 search.html,
    "reference"): ``Type/id`` for each served type, so that the token index answers by equality. (A LIKE on the
    ending read every reference of the parameter in the clinic.)"""
    if "/" in value:
        return [value]
    targets = (param.only_target,) if param.only_target else TYPES
    return [value, *(f"{target}/{value}" for target in targets)]


# --- SQL over the projection --------------------------------------------------------------------------------------


def _date_condition(start: Any, end: Any, prefix: str, lo: Any, hi: Any) -> Any:
    return {
        "eq": and_(start >= lo, end <= hi),
        "ne": not_(and_(start >= lo, end <= hi)),
        "gt": end > hi,
        "lt": start < lo,
        "ge": end >= lo,
        "le": start <= hi,
    }[prefix]


def _like_prefix(value: str) -> str:
    """A LIKE pattern (ESCAPE '/') for the strings that start with ``value``: %, _ and / in it match themselves."""
    return value.replace("/", "//").replace("%", "/%").replace("_", "/_") + "%"


# A search's SQL is built once per shape (type, parameters, modifiers, the form of each value, sort) and run with its
# values as bound parameters: building the statement took as long as running it. The shapes a client can send
# are many (one per number of values), so at most this many are kept.
MAX_CACHED_SHAPES = 512
_STATEMENTS: dict[tuple, Any] = {}


def _value_slot(c: Criterion, value: Any) -> tuple[tuple, tuple]:
    """(form, literals) of one value of an indexed criterion: the form decides the SQL, the literals are bound
    in this order by ``_value_condition``."""
    kind = c.param.type
    if kind == "token":
        system, code = value
        form = (code is not None, "absent" if system == "" else "any" if system is None else "equal")
        return ("token", *form), tuple(v for v in (code, system) if v not in (None, ""))
    if kind == "reference":
        return ("reference",), (reference_codes(c.param, value),)
    if kind == "date":
        prefix, lo, hi = value
        return ("date", prefix), (lo, hi)
    if kind == "string" and c.modifier != "exact":
        return ("prefix",), (_like_prefix(value),)
    return ("equal",), (value,)


def _value_condition(form: tuple, take: Callable[..., Any]) -> Any:
    s = fhir_search_index
    if form[0] == "token":
        _, has_code, system = form
        parts = [s.c.code == take()] if has_code else []
        if system == "absent":
            parts.append(s.c.system.is_(None))
        elif system == "equal":
            parts.append(s.c.system == take())
        return and_(*parts)
    if form[0] == "reference":
        return s.c.code.in_(take(expanding=True))
    if form[0] == "date":
        # start IS NOT NULL (true of every date row) lets the partial date index answer every prefix
        return and_(s.c.start.is_not(None), _date_condition(s.c.start, s.c.end, form[1], take(), take()))
    if form[0] == "prefix":
        return s.c.code.like(take(), escape="/")
    return s.c.code == take()


def _criterion_slots(c: Criterion) -> tuple[tuple, list[Any]]:
    """(form, literals) of a criterion, the literals in the order ``_criterion_condition`` binds them."""
    if c.param.code == "_id":
        return ("_id",), [[code for _, code in c.values]]
    slots = [
        (("date", value[0]), value[1:]) if c.param.code == "_lastUpdated" else _value_slot(c, value)
        for value in c.values
    ]
    return (c.param.code, *(form for form, _ in slots)), [lit for _, literals in slots for lit in literals]


def _criterion_condition(form: tuple, take: Callable[..., Any]) -> Any:
    t, s = fhir_resources, fhir_search_index
    code, values = form[0], form[1:]
    if code == "_id":
        return t.c.id.in_(take(expanding=True))
    if code == "_lastUpdated":
        column = t.c.last_updated
        return or_(*(_date_condition(column, column, value[1], take(), take()) for value in values))
    matching = select(s.c.id).where(
        s.c.clinic_id == bindparam("clinic_id"),
        s.c.resource_type == bindparam("resource_type"),
        s.c.param == code,
        or_(*(_value_condition(value, take) for value in values)),
    )
    return t.c.id.in_(matching)


def _where(forms: tuple) -> list[Any]:
    """WHERE of a search: the current resources of the type whose id is among the matches of each indexed
    criterion (``id IN (SELECT id FROM the token/date index ...)``), so that the index of the criterion's parameter
    and value finds the matches and the primary key the resources (tests/integration/fhir/test_query_plans.py and
    test_query_plans_postgres.py). A join from a DISTINCT list of ids made SQLite walk every index row of the type
    instead. PostgreSQL picks that plan once it has statistics (run ANALYZE after bulk imports)."""
    t = fhir_resources
    numbers = itertools.count()

    def take(expanding: bool = False) -> Any:
        return bindparam(f"v{next(numbers)}", expanding=expanding)

    where = [
        t.c.clinic_id == bindparam("clinic_id"),
        t.c.resource_type == bindparam("resource_type"),
        t.c.is_current.is_(True),
    ]
    return where + [_criterion_condition(form, take) for form in forms]


def _search_order(query_sort: tuple, t: Any) -> list[Any]:
    """ORDER BY of a search over ``t`` (the resource table or an alias of it): the ``_sort`` keys, then
    lastUpdated and id, so that pages are stable."""
    s = fhir_search_index
    order = []
    for code, desc in query_sort:
        if code == "_id":
            col: Any = t.c.id
        elif code == "_lastUpdated":
            col = t.c.last_updated
        else:
            col = (
                select(func.min(s.c.start))
                .where(
                    s.c.clinic_id == bindparam("clinic_id"),
                    s.c.resource_type == bindparam("resource_type"),
                    s.c.param == code,
                    s.c.id == t.c.id,
                )
                .scalar_subquery()
            )
        order.append(col.desc() if desc else col.asc())
    return [*order, t.c.last_updated.asc(), t.c.id.asc()]


_WHOLE_ROWS = fhir_resources.alias("whole")  # the page's rows, read whole


def _page_statement(forms: tuple, sort: tuple) -> Any:
    """The page of current resources that match, each row with the total (``search_total``).

    The page and the total are worked out on the narrow rows (id, version, sort keys), and only the page's rows are
    then read whole by primary key: counting and sorting whole rows made SQLite carry every match's body through the
    window count, so a page of 20 cost as much as reading all of a patient's observations."""
    t, whole = fhir_resources, _WHOLE_ROWS
    page = (
        select(t.c.id, t.c.version_id, func.count().over().label("search_total"))
        .where(*_where(forms))
        .order_by(*_search_order(sort, t))
        .limit(bindparam("page_size", type_=Integer))
        .offset(bindparam("page_offset", type_=Integer))
        .subquery("page")
    )
    return (
        select(whole, page.c.search_total)
        .join(
            page,
            and_(
                whole.c.clinic_id == bindparam("clinic_id"),
                whole.c.resource_type == bindparam("resource_type"),
                whole.c.id == page.c.id,
                whole.c.version_id == page.c.version_id,
            ),
        )
        .order_by(*_search_order(sort, whole))
    )


def _count_statement(forms: tuple, sort: tuple) -> Any:
    return select(func.count()).select_from(fhir_resources).where(*_where(forms))


def _prepared(build: Callable[[tuple, tuple], Any], clinic_id: str, query: Query) -> tuple[Any, dict[str, Any]]:
    """The statement of the query's shape (built once) and the values to run it with."""
    slots = [_criterion_slots(c) for c in query.criteria]
    forms = tuple(form for form, _ in slots)
    sort = tuple(query.sort)
    key = (build.__name__, forms, sort)
    statement = _STATEMENTS.get(key)
    if statement is None:
        statement = build(forms, sort)
        if len(_STATEMENTS) < MAX_CACHED_SHAPES:
            _STATEMENTS[key] = statement
    values = {f"v{i}": value for i, value in enumerate(lit for _, literals in slots for lit in literals)}
    values |= {
        "clinic_id": clinic_id,
        "resource_type": query.resource_type,
        "page_size": query.count,
        "page_offset": query.offset,
    }
    return statement, values


def search_projection(session: Session, clinic_id: str, query: Query) -> tuple[list[Any], int]:
    # the total comes with the page (a window count), in the same query
    rows = session.execute(*_prepared(_page_statement, clinic_id, query)).all()
    if rows:
        return rows, rows[0].search_total
    if query.offset == 0 and query.count > 0:
        return [], 0
    # _count=0 or a page past the end: no row to carry the total
    return [], session.execute(*_prepared(_count_statement, clinic_id, query)).scalar_one()


def search_statement(clinic_id: str, query: Query) -> Any:
    """The page statement of a search with its values bound (for inspecting its plan)."""
    statement, values = _prepared(_page_statement, clinic_id, query)
    return statement.params(values)


def included_refs(session: Session, clinic_id: str, query: Query, ids: list[str]) -> list[tuple[str, str]]:
    s = fhir_search_index
    refs: list[tuple[str, str]] = []
    for param in query.include:
        for row in session.execute(
            select(s.c.code).where(
                s.c.clinic_id == clinic_id,
                s.c.resource_type == query.resource_type,
                s.c.param == param.code,
                s.c.id.in_(ids),
            )
        ):
            parts = row.code.split("/")
            if len(parts) == 2 and parts[0] in TYPES:
                refs.append((parts[0], parts[1]))
    return sorted(set(refs))


# --- in memory (conformance resources) ----------------------------------------------------------------------------


def _row_matches(c: Criterion, value: Any, row: dict) -> bool:
    """Whether one index row (as ``index_rows`` makes it) matches one parsed value of a criterion."""
    kind = c.param.type
    if kind == "token":
        system, code = value
        return (code is None or row["code"] == code) and (
            system is None or (system == "" and row["system"] is None) or row["system"] == system
        )
    if kind == "date":
        return _period_matches(row["start"], row["end"], *value)
    if kind == "string":
        return row["code"] == value if c.modifier == "exact" else (row["code"] or "").startswith(value)
    if kind == "reference":
        return row["code"] in reference_codes(c.param, value)
    return row["code"] == value


def _period_matches(start: datetime, end: datetime, prefix: str, lo: datetime, hi: datetime) -> bool:
    """A date prefix on [start, end] against the searched [lo, hi], as ``_date_condition`` says it in SQL."""
    return {
        "eq": start >= lo and end <= hi,
        "ne": not (start >= lo and end <= hi),
        "gt": end > hi,
        "lt": start < lo,
        "ge": end >= lo,
        "le": start <= hi,
    }[prefix]


def search_memory(resources: list[tuple[dict, datetime]], query: Query) -> tuple[list[tuple[dict, datetime]], int]:
    params = TYPES[query.resource_type].params
    matched = [
        (resource, updated)
        for resource, updated in resources
        if _matches_criteria(resource, updated, index_rows(resource, params), query.criteria)
    ]
    _sort_in_memory(matched, query.sort)
    return matched[query.offset : query.offset + query.count], len(matched)


def _matches_criteria(resource: dict, updated: datetime, rows: list[dict], criteria: list[Criterion]) -> bool:
    """Every criterion (AND) has a value (OR) that the resource's id, lastUpdated or index rows match."""
    for c in criteria:
        if c.param.code == "_id":
            ok = any(resource["id"] == code for _, code in c.values)
        elif c.param.code == "_lastUpdated":
            point = {"start": updated, "end": updated, "code": None, "system": None}
            ok = any(_row_matches(c, v, point) for v in c.values)
        else:
            mine = [r for r in rows if r["param"] == c.param.code]
            ok = any(_row_matches(c, v, r) for v in c.values for r in mine)
        if not ok:
            return False
    return True


def _sort_in_memory(matched: list[tuple[dict, datetime]], sort: list[tuple[str, bool]]) -> None:
    """Sort in place by the ``_sort`` keys (by _id when none), the first key deciding: stable sorts, last key first."""
    for code, desc in reversed(sort or [("_id", False)]):
        key: Callable[[tuple[dict, datetime]], Any]
        if code == "_id":
            key = lambda item: item[0]["id"]  # noqa: E731
        elif code == "_lastUpdated":
            key = lambda item: item[1]  # noqa: E731
        else:
            key = lambda item, code=code: item[0].get(code) or ""  # noqa: E731
        matched.sort(key=key, reverse=desc)


# --- the audit trail ----------------------------------------------------------------------------------------------

_AUDIT_COLUMNS = {"action": "action", "outcome": "outcome", "subtype": "subtype", "type": "type"}


def search_audit(session: Session, clinic_id: str, query: Query) -> tuple[list[Any], int]:
    a = orm.audit_events
    where = [a.c.clinic_id == clinic_id]
    for c in query.criteria:
        if c.param.code == "_id":
            where.append(a.c.id.in_([code for _, code in c.values]))
        elif c.param.code in ("date", "_lastUpdated"):
            where.append(or_(*(_date_condition(a.c.recorded, a.c.recorded, *v) for v in c.values)))
        else:
            column = a.c[_AUDIT_COLUMNS[c.param.code]]
            where.append(column.in_([code for _, code in c.values if code is not None]))
    total = session.execute(select(func.count()).select_from(a).where(*where)).scalar_one()
    order = []
    for code, desc in query.sort:
        col = a.c.id if code == "_id" else a.c.recorded
        order.append(col.desc() if desc else col.asc())
    order += [a.c.recorded.asc(), a.c.id.asc()]
    rows = session.execute(select(a).where(*where).order_by(*order).limit(query.count).offset(query.offset)).all()
    return rows, total


def audit_row(session: Session, clinic_id: str, rid: str) -> Any:
    a = orm.audit_events
    return session.execute(select(a).where(a.c.clinic_id == clinic_id, a.c.id == rid)).one_or_none()
