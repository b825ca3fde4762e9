"""A QuestionnaireResponse against its Questionnaire (R4 §12.3 QuestionnaireResponse, "Validation"), as the reference
validator checks it when it can find the Questionnaire: every item's linkId exists at its place, answers have the
value type the item's type calls for, required items of a completed response are answered, and a choice answers
from the item's answerOption list when it has one. The Questionnaire is found contained (``#id``), in the
enclosing Bundle or Parameters (by canonical ``url``), or among kapfhir's published Questionnaires; otherwise the
response is not checked against it (a warning, as the reference reports it).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from mappings.conformance import load_all
from validation.issues import Issue

# item type -> the answer value[x] keys it accepts (R4 QuestionnaireItemType)
ANSWER_TYPES: dict[str, tuple[str, ...]] = {
    "boolean": ("valueBoolean",),
    "decimal": ("valueDecimal",),
    "integer": ("valueInteger",),
    "date": ("valueDate",),
    "dateTime": ("valueDateTime",),
    "time": ("valueTime",),
    "string": ("valueString",),
    "text": ("valueString",),
    "url": ("valueUri",),
    "choice": ("valueCoding",),
    "open-choice": ("valueCoding", "valueString"),
    "attachment": ("valueAttachment",),
    "reference": ("valueReference",),
    "quantity": ("valueQuantity",),
}


def check(response: dict, questionnaire: dict | None, where: str) -> list[Issue]:
    if questionnaire is None:
        url = response.get("questionnaire")
        if isinstance(url, str):
            return [
                Issue(
                    "warning",
                    "not-found",
                    f"{where}.questionnaire",
                    f"The questionnaire '{url}' could not be resolved, so the response was not checked against it",
                )
            ]
        return []
    issues: list[Issue] = []
    completed = response.get("status") == "completed"
    _items(_list(response.get("item")), _list(questionnaire.get("item")), where, completed, issues)
    return issues


def _list(value: Any) -> list:
    return [x for x in value if isinstance(x, dict)] if isinstance(value, list) else []


def _items(answers: list[dict], questions: list[dict], where: str, completed: bool, issues: list[Issue]) -> None:
    by_link = {q.get("linkId"): q for q in questions}
    answered = set()
    for i, item in enumerate(answers):
        here = f"{where}.item[{i}]"
        link = item.get("linkId")
        question = by_link.get(link)
        if question is None:
            issues.append(Issue("error", "structure", here, f"LinkId '{link}' not found in the questionnaire"))
            continue
        answered.add(link)
        _answers(item, question, here, completed, issues)
        _items(_list(item.get("item")), _list(question.get("item")), here, completed, issues)
    if completed:
        for question in questions:
            if (
                question.get("required") is True
                and question.get("type") != "display"  # a required group must be present too
                and (question.get("linkId") not in answered)
                and not question.get("enableWhen")
            ):
                issues.append(
                    Issue(
                        "error",
                        "required",
                        where,
                        f"No response found for required item with id = '{question.get('linkId')}'",
                    )
                )


def _answers(item: dict, question: dict, where: str, completed: bool, issues: list[Issue]) -> None:
    answers = _list(item.get("answer"))
    kind = question.get("type")
    if completed and not answers and _required_answer(question):
        issues.append(
            Issue("error", "required", where, f"No response answer found for required item '{question.get('linkId')}'")
        )
    if answers and kind in ("display", "group"):
        issues.append(Issue("error", "structure", where, f"Items of type {kind} do not have answers"))
        return
    if len(answers) > 1 and question.get("repeats") is not True:
        issues.append(
            Issue("error", "structure", where, f"Only one answer is allowed for item '{question.get('linkId')}'")
        )
    for j, answer in enumerate(answers):
        _answer(answer, question, f"{where}.answer[{j}]", issues)


def _required_answer(question: dict) -> bool:
    """A required question that takes an answer, not enabled conditionally."""
    return (
        question.get("required") is True
        and question.get("type") not in ("display", "group")
        and not question.get("enableWhen")
    )


def _answer(answer: dict, question: dict, here: str, issues: list[Issue]) -> None:
    """One answer: its value type, and a choice among the answer options."""
    kind = question.get("type")
    allowed = ANSWER_TYPES.get(kind) if isinstance(kind, str) else None
    keys = [k for k in answer if k.startswith("value")]
    if allowed is not None and keys and keys[0] not in allowed:
        issues.append(
            Issue(
                "error",
                "structure",
                f"{here}.{keys[0]}",
                f"Answer value must be of the type {' or '.join(a[5:] for a in allowed)} for an item of type {kind}",
            )
        )
        return
    options = _list(question.get("answerOption"))
    if kind == "choice" and options and keys == ["valueCoding"]:
        coding = answer["valueCoding"]
        if isinstance(coding, dict) and not any(_same(coding, o.get("valueCoding")) for o in options):
            issues.append(
                Issue(
                    "error",
                    "code-invalid",
                    f"{here}.valueCoding",
                    f"The code provided ({coding.get('system')}#{coding.get('code')}) is not in the options list",
                )
            )


def _same(coding: dict, option: Any) -> bool:
    if not isinstance(option, dict):
        return False
    return coding.get("code") == option.get("code") and (
        option.get("system") is None or coding.get("system") == option.get("system")
    )


def candidates(url: str, containers: Iterator[dict]) -> dict | None:
    """The Questionnaire with canonical ``url`` among the given resources."""
    canonical = url.split("|", 1)[0]
    for resource in containers:
        if resource.get("resourceType") == "Questionnaire" and resource.get("url") == canonical:
            return resource
    return None


# --- the write path: a QuestionnaireResponse against the kapfhir Questionnaire it names -----------------------------
# What a write (and $validate without the R4 definitions) checks: stricter than ``check`` above on what kapfhir's
# own forms mean (enableWhen, amended responses), and silent on Questionnaires kapfhir does not publish.

_ANSWER_KEY = {
    "boolean": "valueBoolean",
    "string": "valueString",
    "text": "valueString",
    "date": "valueDate",
    "integer": "valueInteger",
    "decimal": "valueDecimal",
    "choice": "valueCoding",
}


def check_against_kapfhir(resource: dict, root: str) -> list[Issue]:
    """Items, answer types, answer options, enableWhen and (when completed or amended) required items, against the
    kapfhir Questionnaire named by ``questionnaire``. A Questionnaire kapfhir does not publish is not checked."""
    canonical = str(resource.get("questionnaire", "")).split("|")[0]
    questionnaire = load_all().get(canonical)
    if questionnaire is None or questionnaire.get("resourceType") != "Questionnaire":
        return []
    items = resource.get("item", [])
    if not isinstance(items, list):
        return []
    issues: list[Issue] = []
    complete = resource.get("status") in ("completed", "amended")
    answers = _answers_by_link_id(items, {})
    _check_items(questionnaire.get("item", []), items, answers, root, complete, issues)
    return issues


def _list(value: Any) -> list:
    """An array element as given, or nothing when it is no array (the structure layer reports that)."""
    return value if isinstance(value, list) else []


def _answers_by_link_id(items: list, found: dict[str, list[dict]]) -> dict[str, list[dict]]:
    for item in _list(items):
        if isinstance(item, dict):
            found.setdefault(str(item.get("linkId")), []).extend(
                a for a in _list(item.get("answer")) if isinstance(a, dict)
            )
            _answers_by_link_id(item.get("item"), found)
    return found


def _enabled(question: dict, answers: dict[str, list[dict]]) -> bool:
    """enableWhen with the '=' operator (the only one kapfhir's Questionnaires use); several conditions: any."""
    conditions = question.get("enableWhen") or []
    if not conditions:
        return True
    return any(_condition_met(condition, answers) for condition in conditions)


def _condition_met(condition: dict, answers: dict[str, list[dict]]) -> bool:
    expected = {k: w for k, w in condition.items() if k.startswith("answer")}
    for key, wanted in expected.items():
        value_key = "value" + key.removeprefix("answer")
        for answer in answers.get(condition.get("question"), []):
            got = answer.get(value_key)
            if isinstance(wanted, dict) and isinstance(got, dict):
                if (got.get("system"), got.get("code")) == (wanted.get("system"), wanted.get("code")):
                    return True
            elif got == wanted:
                return True
    return False


def _check_items(
    questions: list[dict], items: list, answers: dict[str, list[dict]], path: str, complete: bool, issues: list[Issue]
) -> None:
    by_link = {q["linkId"]: q for q in questions}
    seen: set[str] = set()
    for i, item in enumerate(items or []):
        where = f"{path}.item[{i}]"
        link_id = item.get("linkId") if isinstance(item, dict) else None
        question = by_link.get(link_id) if isinstance(link_id, str) else None
        if question is None:
            issues.append(
                Issue("error", "structure", f"{where}.linkId", f"no item {link_id!r} here in the Questionnaire")
            )
            continue
        seen.add(link_id)
        if question["type"] == "group":
            _check_items(question.get("item", []), _list(item.get("item")), answers, where, complete, issues)
            continue
        _check_answers(question, item, answers, where, issues)
    if complete:
        _required_answered(questions, seen, answers, path, issues)


def _check_answers(question: dict, item: dict, answers: dict[str, list[dict]], where: str, issues: list[Issue]) -> None:
    link_id = question["linkId"]
    given = _list(item.get("answer"))
    if len(given) > 1 and not question.get("repeats"):
        issues.append(Issue("error", "structure", f"{where}.answer", f"item {link_id!r} takes one answer"))
    key = _ANSWER_KEY.get(question["type"])
    for j, answer in enumerate(given):
        if not isinstance(answer, dict):
            continue  # the structure layer reports it
        if key is not None and key not in answer:
            issues.append(
                Issue("error", "value", f"{where}.answer[{j}]", f"item {link_id!r} is {question['type']}: {key}")
            )
        elif key == "valueCoding" and question.get("answerOption") and not _an_option(answer[key], question):
            issues.append(
                Issue("error", "code-invalid", f"{where}.answer[{j}]", f"not an answer option of {link_id!r}")
            )
    if given and not _enabled(question, answers):
        issues.append(Issue("error", "business-rule", f"{where}.answer", f"item {link_id!r} is not enabled"))


def _an_option(coding: Any, question: dict) -> bool:
    if not isinstance(coding, dict) or not all(isinstance(coding.get(k), str | None) for k in ("system", "code")):
        return True  # not a Coding: the structure layer reports it
    allowed = {
        (o["valueCoding"].get("system"), o["valueCoding"].get("code"))
        for o in question["answerOption"]
        if "valueCoding" in o
    }
    return (coding.get("system"), coding.get("code")) in allowed


def _required_answered(
    questions: list[dict], seen: set[str], answers: dict[str, list[dict]], path: str, issues: list[Issue]
) -> None:
    for question in questions:
        if question.get("required") and question["linkId"] not in seen and _enabled(question, answers):
            issues.append(
                Issue("error", "required", f"{path}.item", f"required item {question['linkId']!r} is not answered")
            )
