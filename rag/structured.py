"""Structured output: a JSON-schema response_format goes to the server (vLLM turns it into
guided decoding); what comes back is validated here, because not every server enforces it
(`transformers serve` ignores response_format) and a length cut can truncate even guided JSON."""

from __future__ import annotations

import json
from typing import Any

import jsonschema

from rag.errors import InvalidInput, InvalidStructuredOutput


def check_format(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """Validate an OpenAI-style response_format up front: a bad schema is the caller's 422."""
    if response_format is None:
        return None
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return response_format
    if kind != "json_schema":
        raise InvalidInput("response_format.type must be text, json_object or json_schema")
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
        raise InvalidInput("response_format.json_schema.schema must be a JSON schema object")
    try:
        jsonschema.validators.validator_for(spec["schema"]).check_schema(spec["schema"])
    except jsonschema.SchemaError as exc:
        raise InvalidInput(f"response_format schema is not valid: {exc.message}") from exc
    return {"type": "json_schema", "json_schema": {"name": spec.get("name") or "answer", **spec}}


def parse(text: str, response_format: dict[str, Any]) -> Any:
    """The JSON value in text, checked against the schema; InvalidStructuredOutput if not."""
    body = text.strip()
    if body.startswith("```"):  # models without guided decoding like to fence JSON
        body = body.strip("`").removeprefix("json").strip()
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise InvalidStructuredOutput(f"the model did not answer with JSON: {exc}") from exc
    if response_format["type"] == "json_object":
        if not isinstance(value, dict):
            raise InvalidStructuredOutput("the model's JSON is not an object")
        return value
    schema = response_format["json_schema"]["schema"]
    error = jsonschema.exceptions.best_match(
        jsonschema.validators.validator_for(schema)(schema).iter_errors(value)
    )
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise InvalidStructuredOutput(
            f"the model's JSON fails the schema at {where}: {error.message}"
        )
    return value
