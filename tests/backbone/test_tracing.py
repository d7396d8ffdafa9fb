"""Traces: one change is one trace across the services (the context travels in the event headers).

All services run in this process (the ``pipeline`` fixture); spans go to the SDK's in-memory
exporter.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from events.store import EventStore
from events.subjects import STREAM
from services.common import client, tracing
from services.common.errors import ConfigError

Eventually = Callable[[Callable[[], Awaitable[bool]], float], Awaitable[None]]
PIPELINE = {"planner", "preflight", "executor", "verifier", "auditor"}
_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> InMemorySpanExporter:
    """The process's tracer provider, exporting to memory (the API allows setting it once per process)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    return _EXPORTER


def _attr(span: ReadableSpan, key: str) -> str:
    return str((span.attributes or {}).get(key, ""))


async def test_one_change_is_one_trace_across_all_five_services(
    spans: InMemorySpanExporter, pipeline: EventStore, tmp_path: Path, eventually: Eventually
) -> None:
    change_id = await client.submit(pipeline.nc, "acme", {"request": f"Create directory {tmp_path}/t"},
                                    principal="alice")
    status = await client.wait_closed(pipeline, "acme", change_id, within=30)
    assert status.outcome == "succeeded"

    def mine() -> list[ReadableSpan]:
        return [s for s in spans.get_finished_spans() if _attr(s, "upm.change_id") == change_id]

    async def auditor_done() -> bool:  # its span ends once change.closed is stored and acked
        return any(_attr(s, "upm.service") == "auditor" for s in mine())

    await eventually(auditor_done, 10)
    found = mine()
    root = [s for s in found if _attr(s, "upm.service") == "gateway"]
    assert len(root) == 1 and root[0].parent is None, "the gateway starts the change's trace"
    trace_id = root[0].context.trace_id
    handled = [s for s in found if s.context.trace_id == trace_id and _attr(s, "upm.event_type")]
    assert {_attr(s, "upm.service") for s in handled} >= PIPELINE | {"gateway"}
    assert {s.context.trace_id for s in found if _attr(s, "upm.service") in PIPELINE} == {trace_id}, (
        "every service's handling of this change is in the gateway's trace")
    by_id = {s.context.span_id: s for s in spans.get_finished_spans()}
    for span in handled:
        if span is not root[0]:
            assert span.parent is not None and span.parent.span_id in by_id, f"{span.name} hangs off a known span"
    assert any(s.name.startswith("executor step") for s in spans.get_finished_spans()
               if s.context.trace_id == trace_id), "the executor's steps are spans of the change's trace"

    # the context is in the stored events' headers: a W3C traceparent naming the trace
    msg = await pipeline.js.get_last_msg(STREAM, f"upm.evt.acme.{change_id}.intent.submitted")
    assert (msg.headers or {}).get("traceparent", "").split("-")[1] == f"{trace_id:032x}"


def test_exporting_is_off_unless_asked_and_a_wrong_setting_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(tracing.OTLP_ENV, raising=False)
    monkeypatch.delenv(tracing.TRACES_ENV, raising=False)
    assert tracing.configure("planner") is None
    monkeypatch.setenv(tracing.TRACES_ENV, "jaeger")
    with pytest.raises(ConfigError, match="use console"):
        tracing.configure("planner")
    monkeypatch.delenv(tracing.TRACES_ENV)
    monkeypatch.setenv(tracing.OTLP_ENV, "http://127.0.0.1:4318")
    try:
        import opentelemetry.exporter.otlp  # noqa: F401
    except ImportError:  # the extra is not installed: the error says how
        with pytest.raises(ConfigError, match=r"pip install 'upm\[otlp\]'"):
            tracing.configure("planner")
