"""OpenTelemetry traces: one change is one trace across the services.

The gateway starts the trace's root span when it stores an intent; the trace context travels in
the headers of every event published to JetStream (W3C ``traceparent``, set by
:meth:`events.store.EventStore.append`); the runtime reads it from each delivered message and
handles the event in a child span (``<service> <event type>``, with ``upm.service``,
``upm.change_id``, ``upm.tenant``, ``upm.event_type``), whose own appends carry it on. The
executor adds a span per step.

Exporting is off by default (the OpenTelemetry API's no-op tracer: no spans are kept).
:func:`configure` turns it on for a service process:

* ``OTEL_EXPORTER_OTLP_ENDPOINT`` set: OTLP over HTTP to that collector (the exporter is an
  extra: ``pip install 'upm[otlp]'``); the other ``OTEL_EXPORTER_OTLP_*`` variables apply;
* ``UPM_TRACES=console``: each finished span as one JSON line on standard output (under
  ``upm up``: the service's log).

Anything else can install its own tracer provider (the tests use the SDK's in-memory exporter).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from opentelemetry import propagate, trace
from opentelemetry.context import Context

from services.common.errors import ConfigError

OTLP_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
TRACES_ENV = "UPM_TRACES"
TRACER = trace.get_tracer("upm")


def configure(service: str) -> str | None:
    """Install an exporting tracer provider for this process as the environment asks (see the
    module docstring); which exporter, or ``None`` when tracing stays off."""
    endpoint, mode = os.environ.get(OTLP_ENV), os.environ.get(TRACES_ENV, "")
    if not endpoint and mode != "console":
        if mode:
            raise ConfigError(f"{TRACES_ENV}={mode!r}: use console (spans as JSON lines), or set {OTLP_ENV} for OTLP")
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    exporter: SpanExporter
    if endpoint:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise ConfigError(f"{OTLP_ENV} is set but the OTLP exporter is not installed: pip install 'upm[otlp]' "
                              f"(opentelemetry-exporter-otlp-proto-http), or unset {OTLP_ENV}") from exc
        exporter, name = OTLPSpanExporter(), f"otlp {endpoint}"
    else:
        exporter = ConsoleSpanExporter(out=sys.stdout, formatter=lambda span: span.to_json(indent=None) + "\n")
        name = "console"
    provider = TracerProvider(resource=Resource.create({"service.name": f"upm-{service}"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return name


def extract(headers: Mapping[str, str] | None) -> Context:
    """The trace context a delivered message's headers carry (an empty one when none)."""
    return propagate.extract(dict(headers or {}))
