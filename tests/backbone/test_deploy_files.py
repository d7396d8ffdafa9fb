"""The deployment files, checked without Docker (this machine has none): compose.yaml parses as YAML
and says what a host needs (healthchecks, the NATS monitoring port, writable volumes, a named user);
the three cluster configurations route to each other under distinct names."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from upm import app

ROOT = Path(__file__).resolve().parents[2]


def test_compose_file_parses_and_every_container_has_a_healthcheck_and_a_writable_volume() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"nats", *app.SERVICE_NAMES}
    assert all("test" in s["healthcheck"] for s in services.values())
    assert "127.0.0.1:8222:8222" in services["nats"]["ports"]
    assert "8222/healthz" in " ".join(services["nats"]["healthcheck"]["test"])
    for name in app.SERVICE_NAMES:
        service = services[name]
        assert service["command"][:2] == ["service", name] and "--ready-dir" in service["command"]
        assert "upm-data:/data" in service["volumes"] and service["environment"]["UPM_DATA"] == "/data"
        assert service["depends_on"]["nats"]["condition"] == "service_healthy"
    assert set(compose["volumes"]) == {"nats-data", "upm-data"}
    assert "http: 0.0.0.0:8222" in (ROOT / "deploy" / "nats.conf").read_text()


def test_the_image_user_exists_and_owns_the_data_folder() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"useradd --uid 65532 .* upm", dockerfile)
    assert "chown upm:upm /data" in dockerfile and "USER 65532:65532" in dockerfile


def test_the_cluster_configurations_route_to_each_other_under_distinct_names() -> None:
    confs = [(ROOT / "deploy" / "cluster" / f"nats-{i}.conf").read_text() for i in (1, 2, 3)]
    names = {re.search(r"server_name: (\S+)", c).group(1) for c in confs}  # type: ignore[union-attr]
    assert names == {"upm-nats-1", "upm-nats-2", "upm-nats-3"}
    for conf in confs:
        assert "name: upm" in conf and "sync_interval: always" in conf
        assert re.findall(r"nats-route://(nats-\d):6222", conf) == ["nats-1", "nats-2", "nats-3"]
