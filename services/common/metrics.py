"""Prometheus metrics: what every UPM process counts, and the one endpoint that shows them all.

Under ``upm up`` each process (every service, the supervisor) writes its samples to files in
``<data>/metrics`` (prometheus-client's multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR``, which
``upm up`` sets for them) and the supervisor serves the sum of them all on one port
(``http://127.0.0.1:<port>/metrics``, recorded in the state file as ``metrics``): one scrape
target per deployment, counters that survive a service's restart (a dead process's file stays
and is summed), and nothing to discover when a service comes back under a new pid. A process
run on its own (``upm service``, the tests' in-process pipeline) counts in prometheus-client's
default registry.

==============================================  ==========================================
metric                                          labels
==============================================  ==========================================
``upm_events_handled_total``                    service, type  (handled and acked)
``upm_events_failed_total``                     service, type  (handler raised; nak'd)
``upm_handle_seconds``                          service, type  (histogram)
``upm_consumer_pending``                        service  (undelivered events left on its
                                                durable consumer, as of its last delivery)
``upm_executor_step_seconds``                   direction, outcome  (histogram)
``upm_guard_refusals_total``                    rule
``upm_supervisor_restarts_total``               process
==============================================  ==========================================
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess, start_http_server
from prometheus_client.mmap_dict import MmapedDict

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PORT_ENV = "UPM_METRICS_PORT"  # the supervisor's /metrics port (default: any free one)
ADDR_ENV = "UPM_METRICS_ADDR"  # and the address it binds (default: loopback only)
METRICS_DIR = "metrics"

EVENTS_HANDLED = Counter("upm_events_handled", "Events a service handled and acknowledged", ["service", "type"])
EVENTS_FAILED = Counter("upm_events_failed", "Deliveries whose handling failed (redelivered later)",
                        ["service", "type"])
HANDLE_SECONDS = Histogram("upm_handle_seconds", "Time to handle one delivered event (read, decide, append)",
                           ["service", "type"])
CONSUMER_PENDING = Gauge("upm_consumer_pending", "Events not yet delivered to the service's durable consumer",
                         ["service"], multiprocess_mode="livemax")
STEP_SECONDS = Histogram("upm_executor_step_seconds", "Time to run one plan step (all its attempts)",
                         ["direction", "outcome"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
GUARD_REFUSALS = Counter("upm_guard_refusals", "Commands the guard refused before anything ran", ["rule"])
GUARD_RUNS = Counter("upm_guard_runs", "Command attempts the guard ran, by the first program's name (stat, aws, …)",
                     ["program"])
RESTARTS = Counter("upm_supervisor_restarts", "Processes the supervisor started again after they exited",
                   ["process"])


def _private_files() -> None:
    """Create this process's sample files readable by its owner only, before prometheus-client opens
    them with the process's umask (the executor runs with the operator's): a counter, a histogram and
    a ``livemax`` gauge file, the kinds defined above."""
    path = os.environ.get(MULTIPROC_ENV)
    if not path or not os.path.isdir(path):
        return
    for prefix in ("counter", "histogram", "gauge_livemax"):
        file = os.path.join(path, f"{prefix}_{os.getpid()}.db")
        os.close(os.open(file, os.O_CREAT | os.O_WRONLY, 0o600))
        MmapedDict(file).close()  # type: ignore[no-untyped-call]  # laid out (empty) as the aggregator expects to read it


_private_files()


def prepare_dir(folder: Path) -> Path:
    """``<folder>/metrics``, emptied: the files of a previous run must not be summed into this one."""
    path = folder / METRICS_DIR
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o700)
    return path


def serve_aggregate() -> str | None:
    """Serve the sum of every process's samples (the multiprocess directory) on ``UPM_METRICS_PORT``
    (default: a free port) of ``UPM_METRICS_ADDR`` (default 127.0.0.1); its URL, or ``None`` when
    this process is not in multiprocess mode."""
    path = os.environ.get(MULTIPROC_ENV)
    if not path:
        return None
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    addr = os.environ.get(ADDR_ENV, "127.0.0.1")
    server, _ = start_http_server(int(os.environ.get(PORT_ENV, "0")), addr=addr, registry=registry)
    return f"http://{addr}:{server.server_port}/metrics"


def process_gone(pid: int) -> None:
    """Drop the live gauges of an exited process (its counters stay, and keep counting in the sum)."""
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
