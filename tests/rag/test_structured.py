from __future__ import annotations

import pytest

from rag.errors import InvalidInput, InvalidStructuredOutput
from rag.structured import check_format, parse

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
FORMAT = {"type": "json_schema", "json_schema": {"name": "count", "schema": SCHEMA}}


def test_formats_are_checked_up_front() -> None:
    assert check_format(None) is None and check_format({"type": "text"}) is None
    assert check_format({"type": "json_object"}) == {"type": "json_object"}
    assert check_format(FORMAT)["json_schema"]["schema"] == SCHEMA
    unnamed = check_format({"type": "json_schema", "json_schema": {"schema": SCHEMA}})
    assert unnamed["json_schema"]["name"] == "answer"  # vLLM and OpenAI want a name
    for bad in (
        {"type": "xml"},
        {"type": "json_schema"},
        {"type": "json_schema", "json_schema": {"schema": {"type": "no-such-type"}}},
    ):
        with pytest.raises(InvalidInput):
            check_format(bad)


def test_parse_validates_against_the_schema() -> None:
    assert parse('{"n": 3}', FORMAT) == {"n": 3}
    assert parse('```json\n{"n": 3}\n```', FORMAT) == {"n": 3}
    with pytest.raises(InvalidStructuredOutput, match="not answer with JSON"):
        parse("three", FORMAT)
    with pytest.raises(InvalidStructuredOutput, match="at n"):
        parse('{"n": "three"}', FORMAT)
    with pytest.raises(InvalidStructuredOutput, match="root"):
        parse("{}", FORMAT)
    assert parse('{"a": 1}', {"type": "json_object"}) == {"a": 1}
    with pytest.raises(InvalidStructuredOutput):
        parse("[1]", {"type": "json_object"})
