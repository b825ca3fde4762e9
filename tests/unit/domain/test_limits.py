"""The JSON body checks at the edge: the raw-text pre-check never lets an unstorable string through, and the
nesting check agrees with the plain definition of depth."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from service.domain import limits
from service.entrypoints.http import _depth

# Strings that favour the characters that matter: NUL, surrogates (lone and paired), the escape's own letters.
TEXT = st.lists(
    st.sampled_from(["\x00", "\ud800", "\udfff", "\ud83d", "\ude00", "\\", "u", "0", "d", "D", "8", "é", "a"])
    | st.characters(codec="utf-8"),
    max_size=12,
).map("".join)  # st.text() would leave the surrogates out
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=20,
)


def _encodings(value: Any) -> list[bytes]:
    """The ways a client may send the value: ASCII-escaped, or UTF-8 (a lone surrogate as its surrogate bytes,
    which json.loads decodes back)."""
    return [
        json.dumps(value).encode(),
        json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"),
    ]


@given(JSON)
def test_a_text_the_pre_check_passes_holds_no_unstorable_string(value: Any) -> None:
    for raw in _encodings(value):
        body = json.loads(raw)
        if not limits.json_text_may_hold_unstorable(raw):
            assert limits.json_character_errors(body) == []


@given(JSON)
def test_the_pre_check_flags_every_text_with_an_unstorable_string(value: Any) -> None:
    for raw in _encodings(value):
        if limits.json_character_errors(json.loads(raw)):
            assert limits.json_text_may_hold_unstorable(raw)


def test_plain_fhir_json_is_not_walked_and_nul_or_surrogates_are() -> None:
    assert not limits.json_text_may_hold_unstorable(b'{"resourceType":"Patient","name":[{"family":"Jos\\u00e9"}]}')
    for raw in (
        b'{"a":"x\\u0000"}',
        b'{"a":"\\uD800"}',
        b'{"a":"\\udc00"}',
        '{"a":"\ud800"}'.encode("utf-8", "surrogatepass"),
    ):
        assert limits.json_text_may_hold_unstorable(raw)
        assert limits.json_character_errors(json.loads(raw))


def _reference_depth(value: Any) -> int:
    """Depth by definition: a scalar is 1, a container one more than its deepest child (1 when empty)."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return 1 + max((_reference_depth(v) for v in value), default=0)
    return 1


@given(JSON, st.integers(min_value=0, max_value=8))
def test_the_nesting_check_agrees_with_the_definition_of_depth(value: Any, limit: int) -> None:
    assert _depth(value, limit) == (_reference_depth(value) > limit)


@given(JSON)
def test_given_the_raw_text_the_character_check_finds_what_the_full_walk_finds(value: Any) -> None:
    for raw in _encodings(value):
        body = json.loads(raw)
        assert limits.json_character_errors(body, raw=raw) == limits.json_character_errors(body)
