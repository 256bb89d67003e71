from __future__ import annotations

import json

import pytest

from rag.core.errors import InvalidInput, InvalidStructuredOutput
from rag.generation.structured import check_format, parse
from rag.qa.sanitize import REMOVED_LINK, strip_links

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


def _no_links(text: str) -> str:
    return strip_links(text, ["docs.example.com"])


def test_every_string_of_a_json_answer_is_cleaned() -> None:
    fmt = {"type": "json_object"}
    answer = {
        "steps": [
            "Open ![x](https://evil.example/c?d=secret)",
            "See [docs](https://docs.example.com/a)",
        ],
        "links": {"https://evil.example/k": {"n": 1, "ok": True, "none": None}},
    }
    cleaned = parse(json.dumps(answer), fmt, _no_links)
    assert cleaned == {
        "steps": ["Open x", "See [docs](https://docs.example.com/a)"],
        "links": {REMOVED_LINK: {"n": 1, "ok": True, "none": None}},
    }
    untouched = {"steps": ["Open the console"], "n": 2}
    assert parse(json.dumps(untouched), fmt, _no_links) == untouched


def test_a_cleaned_answer_must_still_fit_the_schema() -> None:
    url_schema = {
        "type": "object",
        "properties": {"url": {"type": "string", "pattern": "^https://"}},
        "required": ["url"],
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "link", "schema": url_schema}}
    assert parse('{"url": "https://docs.example.com/x"}', fmt, _no_links) == {
        "url": "https://docs.example.com/x"
    }
    with pytest.raises(InvalidStructuredOutput, match="allow-list"):
        parse('{"url": "https://evil.example/x"}', fmt, _no_links)
