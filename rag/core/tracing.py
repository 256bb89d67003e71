"""Optional OpenTelemetry tracing: off unless RAG_TRACING__OTLP_ENDPOINT is set.

    HTTP request ── retrieve ── rerank
                └─ llm.complete / llm.stream (traceparent sent upstream, for vLLM's own spans)
    ingest.parse, ingest.chunk, ingest.embed, ingest.store, ingest.index (worker threads)

The SDK is the `otel` extra (`pip install -e '.[otel]'`); nothing here imports it unless tracing
is configured, so the service runs without it, and while tracing is off `span()` is nearly free.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, MutableMapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from rag.core.config import TracingSettings
from rag.core.errors import ConfigError

log = logging.getLogger(__name__)
_NOOP: AbstractContextManager[None] = nullcontext()
_tracer: Any = None  # an opentelemetry Tracer while tracing is on
_provider: Any = None

Attributes = dict[str, str | int | float | bool]


def enabled() -> bool:
    return _tracer is not None


def configure(settings: TracingSettings, *, exporter: Any = None) -> bool:
    """Start tracing when an OTLP endpoint is configured; True when it is on.

    `exporter` replaces the OTLP exporter (tests pass the SDK's in-memory one); spans are then
    exported one by one instead of in batches, so a test sees them at once.

    The provider is ours, not the process-global one: OpenTelemetry lets the global provider be
    set only once per process, and tests (and a restarted app) switch tracing on and off.
    """
    shutdown()
    if not settings.otlp_endpoint:
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio
    except ImportError as exc:
        raise ConfigError(
            "RAG_TRACING__OTLP_ENDPOINT is set but OpenTelemetry is not installed; install the "
            "`otel` extra (pip install -e '.[otel]') or unset the variable"
        ) from exc
    global _tracer, _provider
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.service_name}),
        sampler=ParentBasedTraceIdRatio(settings.sample_ratio),
    )
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=_traces_url(settings.otlp_endpoint)))
        )
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    _provider, _tracer = provider, provider.get_tracer("kbqa")
    log.info("tracing on: spans go to %s", settings.otlp_endpoint)
    return True


def _traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL: a collector's base URL gets the standard path appended."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else endpoint + "/v1/traces"


def shutdown() -> None:
    """Flush and stop (at the end of the app's lifespan); tracing is off afterwards."""
    global _tracer, _provider
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


def span(name: str, attributes: Attributes | None = None) -> AbstractContextManager[Any]:
    """A span around the code inside, child of the current one; a no-op while tracing is off:
    one shared no-op context manager, so the instrumented code pays a function call and a
    branch."""
    if _tracer is None:
        return _NOOP
    return _active(name, attributes)


@contextmanager
def _active(name: str, attributes: Attributes | None) -> Iterator[Any]:
    with _tracer.start_as_current_span(name, attributes=attributes) as current:
        yield current


def start(name: str, attributes: Attributes | None = None) -> Any:
    """A span that outlives a `with` block (a streamed answer); None while tracing is off.
    Make it current with `activate`, end it with `end`."""
    if _tracer is None:
        return None
    return _tracer.start_span(name, attributes=attributes)


def activate(current: Any) -> AbstractContextManager[Any]:
    """Make a span from `start` current for the code inside, without ending it."""
    if current is None:
        return _NOOP
    from opentelemetry.trace import use_span

    return use_span(current, end_on_exit=False)


def end(current: Any, attributes: Attributes | None = None, error: str | None = None) -> None:
    if current is None:
        return
    if attributes:
        current.set_attributes(attributes)
    if error is not None:
        from opentelemetry.trace import Status, StatusCode

        current.set_status(Status(StatusCode.ERROR, error))
    current.end()


def server_span(name: str, headers: Iterable[tuple[bytes, bytes]]) -> AbstractContextManager[Any]:
    """The root span of an HTTP request, continuing the caller's trace (traceparent) if any."""
    if _tracer is None:
        return _NOOP
    from opentelemetry.propagate import extract
    from opentelemetry.trace import SpanKind

    carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers}
    return _tracer.start_as_current_span(name, context=extract(carrier), kind=SpanKind.SERVER)


def finish_server_span(current: Any, method: str, route: str, status: int) -> None:
    """Name the request's span after its route once routing has matched one."""
    if current is None:
        return
    current.update_name(f"{method} {route}")
    current.set_attributes(
        {"http.request.method": method, "http.route": route, "http.response.status_code": status}
    )


def set_attributes(current: Any, attributes: Attributes) -> None:
    """Add attributes to what `span()` yielded (None while tracing is off)."""
    if current is not None:
        current.set_attributes(attributes)


def inject(headers: MutableMapping[str, str]) -> None:
    """Add W3C trace context (traceparent) for the upstream call, while tracing is on."""
    if _tracer is None:
        return
    from opentelemetry.propagate import inject as otel_inject

    otel_inject(headers)


def current_trace_id() -> str | None:
    """The current trace id as 32 hex digits (for log records), None while tracing is off."""
    if _tracer is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else None
