"""Structured output: a JSON-schema response_format goes to the server (vLLM turns it into
guided decoding); what comes back is validated here, because not every server enforces it
(`transformers serve` ignores response_format) and a length cut can truncate even guided JSON.
An invalid answer is asked for again with its validation error, up to a limit (`until_valid`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import jsonschema

from rag.core import metrics
from rag.core.errors import InvalidInput, InvalidStructuredOutput
from rag.generation.llm import Completion, Messages

log = logging.getLogger(__name__)


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


def parse(
    text: str, response_format: dict[str, Any], clean: Callable[[str], str] | None = None
) -> Any:
    """The JSON value in text, checked against the schema; InvalidStructuredOutput if not.
    `clean` (the answer sanitizer) is applied to every string in it, keys included: a JSON
    answer is as able to carry an exfiltrating link or the system prompt as a text one. What
    is cleaned must still fit the schema, or the answer counts as invalid (and is asked for
    again, as any invalid answer is)."""
    value = _checked(_loads(text), response_format)
    if clean is None:
        return value
    cleaned = _map_strings(value, clean)
    if cleaned == value:
        return value
    try:
        return _checked(cleaned, response_format)
    except InvalidStructuredOutput as invalid:
        raise InvalidStructuredOutput(
            f"{invalid} (after links outside the allow-list or text of the system prompt were"
            " removed from it)"
        ) from invalid


@dataclass(frozen=True)
class Valid:
    """A structured answer that passed: its value and every completion it took, in order."""

    value: Any
    completions: list[Completion]

    @property
    def completion(self) -> Completion:
        return self.completions[-1]

    @property
    def retries(self) -> int:
        return len(self.completions) - 1


async def until_valid(
    first: Completion,
    ask: Callable[[Messages], Awaitable[Completion]],
    feedback: Callable[[str, str], Messages],
    response_format: dict[str, Any],
    *,
    retries: int,
    clean: Callable[[str], str] | None = None,
    route: str = "default",
) -> Valid:
    """Parse `first`; while the answer is invalid, ask again with `feedback(answer, error)` (the
    messages that tell the model what was wrong), at most `retries` times. Still invalid then:
    InvalidStructuredOutput (422) naming the last validation error and the retries spent."""
    completions = [first]
    while True:
        try:
            return Valid(parse(completions[-1].text, response_format, clean), completions)
        except InvalidStructuredOutput as invalid:
            spent = len(completions) - 1
            if spent >= retries:
                metrics.STRUCTURED_FAILURES.labels(route).inc()
                raise InvalidStructuredOutput(
                    f"no valid JSON after {spent} {'retry' if spent == 1 else 'retries'}; the "
                    f"last answer failed: {invalid}",
                    retries=spent,
                ) from invalid
            metrics.STRUCTURED_RETRIES.labels(route).inc()
            log.warning(
                "structured output invalid (%s); retry %d of %d", invalid, spent + 1, retries
            )
            completions.append(await ask(feedback(completions[-1].text, str(invalid))))


def _map_strings(value: Any, clean: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, list):
        return [_map_strings(v, clean) for v in value]
    if isinstance(value, dict):
        return {clean(k): _map_strings(v, clean) for k, v in value.items()}
    return value


def _loads(text: str) -> Any:
    body = text.strip()
    if body.startswith("```"):  # models without guided decoding like to fence JSON
        body = body.strip("`").removeprefix("json").strip()
    try:
        return json.loads(body)
    except ValueError as exc:
        raise InvalidStructuredOutput(f"the model did not answer with JSON: {exc}") from exc


def _checked(value: Any, response_format: dict[str, Any]) -> Any:
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
