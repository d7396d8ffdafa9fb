"""The console's pure parts: the SVG plan graph and KPI charts, the view models, the list filters,
sessions and CSRF, the tokens file and the start-up checks of `upm serve` (issue 25)."""

from __future__ import annotations

import json
import re
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from events.lifecycle import ChangeState
from projections import kpi
from projections.console import auth, server, svg, views
from projections.console.data import Filters, list_tenants
from projections.console.routes.session import safe_next
from projections.errors import AccessDenied
from projections.serve import Grant, add_token, load_tokens
from services.common.errors import ConfigError
from services.security.access import Access, parse

ACCESS = parse({"admins": ["root"], "tenants": {"acme": {"alice": ["requester"], "bob": ["approver"]},
                                                "globex": {"gina": ["requester", "approver"]}}}, "test access")


def test_the_plan_graph_puts_each_step_right_of_what_it_depends_on() -> None:
    nodes = [svg.Node("c", "file /a/b/c", "create"), svg.Node("a", "dir /a", "create"),
             svg.Node("b", "dir /a/b", "create"), svg.Node("x", "lone", "delete")]
    edges = [("a", "b"), ("b", "c"), ("a", "c"), ("a", "ghost")]
    assert svg.layers(nodes, edges) == {"a": 0, "b": 1, "c": 2, "x": 0}
    drawn = svg.dag(nodes, edges)
    xs = {m.group(1): float(m.group(2)) for m in re.finditer(r'data-id="(\w)"><rect x="([\d.]+)"', drawn)}
    assert xs["a"] < xs["b"] < xs["c"] and xs["x"] == xs["a"]
    assert drawn.count('class="edge"') == 3  # the edge to an unknown node is not drawn
    assert 'class="node delete"' in drawn


def test_graph_labels_are_escaped_and_a_cycle_does_not_hang() -> None:
    drawn = svg.dag([svg.Node("a", "<script>alert(1)</script>"), svg.Node("b", "b")], [("a", "b"), ("b", "a")])
    assert "<script>" not in drawn and "&lt;script&gt;" in drawn
    assert "no steps" in svg.dag([], [])


def test_a_kpi_chart_draws_both_bands_the_points_and_their_level() -> None:
    k = kpi.BY_NAME["change_success_pct"]
    points = [svg.Point(0, 100.0, "day 1"), svg.Point(86400, 96.0, "day 2"), svg.Point(172800, 50.0, "day 3")]
    drawn = svg.chart(k.name, points, k.l3, k.l4, k.unit)
    assert drawn.count('class="band l3"') == 1 and drawn.count('class="band l4"') == 1
    assert re.findall(r'class="pt (\w+)"', drawn) == ["l4", "l3", "below"]
    ys = [float(y) for y in re.findall(r'cy="([\d.]+)"', drawn)]
    assert ys[0] < ys[1] < ys[2]  # higher values higher up
    mttr = kpi.BY_NAME["mttr_failed_change_min"]  # lower is better: the shaded side is below the L4 line
    assert "no data" in svg.chart(mttr.name, [], mttr.l3, mttr.l4, mttr.unit)


def test_the_dashboard_has_all_ten_kpis_even_without_data() -> None:
    series = [{"kpi": "plan_compile_p95_ms", "t": 3600.0, "value": 12.5}, {"kpi": "nope", "t": 0, "value": 1}]
    charts = views.kpi_charts(series, {"plan_compile_p95_ms": 12.5}, 3600)
    assert [c.kpi.name for c in charts] == [k.name for k in kpi.KPIS]
    compile_chart = charts[[k.name for k in kpi.KPIS].index("plan_compile_p95_ms")]
    assert compile_chart.meets == "L4" and 'class="pt l4"' in compile_chart.svg
    assert {c.meets for c in charts if c.kpi.name != "plan_compile_p95_ms"} == {"no data"}


def test_time_buckets_fit_the_span() -> None:
    assert views.bucket_seconds(None, None) == 3600
    assert views.bucket_seconds(0, 600) == 60  # ten minutes: one-minute buckets
    assert views.bucket_seconds(0, 86400) == 3600
    assert views.bucket_seconds(0, 90 * 86400) == 4 * 86400
    now = datetime(2026, 1, 2, tzinfo=UTC)
    assert views.age((now - timedelta(minutes=5)).replace(tzinfo=None).isoformat(), now) == "5m"
    assert views.age(now - timedelta(days=3), now) == "3d" and views.age(None, now) == ""


def test_the_approve_button_follows_the_rules_the_cli_follows() -> None:
    waiting = ChangeState(tenant="acme", status="awaiting-approval", initiator="alice")
    assert views.approve_right(ACCESS, "bob", waiting) == (True, "")
    assert views.approve_right(ACCESS, "alice", waiting)[1].startswith("you initiated")
    assert "no approver role" in views.approve_right(ACCESS, "gina", waiting)[1]  # an approver of another tenant
    assert views.approve_right(ACCESS, "root", waiting)[0]  # admins approve everywhere
    done = ChangeState(tenant="acme", status="closed", initiator="alice")
    assert not views.approve_right(ACCESS, "bob", done)[0]
    again = ChangeState(tenant="acme", status="awaiting-approval", initiator="alice", grants=("bob",))
    assert not views.approve_right(ACCESS, "bob", again)[0]


def test_filters_refuse_anything_that_is_not_a_value_of_their_rule() -> None:
    f = Filters.of({"tenant": "acme", "status": "awaiting-approval", "initiator": "alice", "environment": "prod"})
    assert f.where().endswith("environment = 'prod'") and f.query()["status"] == "awaiting-approval"
    for bad in ({"tenant": "x' OR 1=1 --"}, {"status": "closed'; DROP"}, {"initiator": "a b"},
                {"environment": "moon"}):
        with pytest.raises(ValueError, match="is not"):
            Filters.of(bad)


def test_lists_read_the_tenants_the_person_belongs_to() -> None:
    assert list_tenants(Grant("alice"), ACCESS) == ["acme"]
    assert list_tenants(Grant("root"), ACCESS) == ["_all"]
    assert list_tenants(Grant("anyone"), Access.open()) == ["_all"]
    assert list_tenants(Grant("upm-serve", "acme"), Access.open()) == ["acme"]  # an open-mode tenant token


def test_sessions_and_csrf() -> None:
    sessions = auth.Sessions()
    one, two = sessions.start(Grant("alice")), sessions.start(Grant("bob"))
    assert sessions.get(one.id) is one and sessions.get("forged") is None
    assert auth.csrf_ok(one, one.csrf)
    assert not auth.csrf_ok(one, two.csrf) and not auth.csrf_ok(one, "") and not auth.csrf_ok(None, one.csrf)
    sessions.end(one.id)
    assert sessions.get(one.id) is None
    tokens = {"t" * 20: Grant("bob")}
    assert auth.sign_in(tokens, token="t" * 20, open_console=False) == Grant("bob")
    with pytest.raises(AccessDenied, match="unknown token"):
        auth.sign_in(tokens, token="u" * 20, open_console=False)
    with pytest.raises(AccessDenied, match="is not a name"):
        auth.sign_in({}, name="bob smith", open_console=True)
    assert safe_next("//evil.example/x") == "/changes" and safe_next("https://evil") == "/changes"
    assert safe_next("/changes/abc") == "/changes/abc"


def test_token_add_writes_a_private_file_and_keeps_the_others(tmp_path: Path) -> None:
    path = tmp_path / "serve_tokens.json"
    first = add_token(path, "alice", ACCESS)
    second = add_token(path, "bob", ACCESS)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(first) >= 16
    assert load_tokens(path, ACCESS) == {first: Grant("alice"), second: Grant("bob")}
    with pytest.raises(AccessDenied, match="'mallory' is not an identity named in the access file"):
        add_token(path, "mallory", ACCESS)
    assert len(json.loads(path.read_text())) == 2  # a refused name adds nothing


def test_serve_refuses_at_start_what_would_fail_later(tmp_path: Path) -> None:
    """The issue: `upm serve` needed a tokens file nothing created, and a short token killed it in the
    background. Now: open mode needs none, secure mode says how to make one, a short token stops the
    start with the reason, and an open console will not listen beyond loopback."""
    assert server.settings(tmp_path, "127.0.0.1", rules=Access.open()).tokens == {}
    with pytest.raises(ConfigError, match="upm serve token add NAME"):
        server.settings(tmp_path, "127.0.0.1", rules=ACCESS)
    (tmp_path / "serve_tokens.json").write_text(json.dumps({"short": "alice"}))
    with pytest.raises(AccessDenied, match="at least 16 characters"):
        server.settings(tmp_path, "127.0.0.1", rules=ACCESS)
    with pytest.raises(ConfigError, match="serves loopback only"):
        server.settings(tmp_path / "none", "0.0.0.0", rules=Access.open())
    assert server.is_loopback("::1") and server.is_loopback("localhost") and not server.is_loopback("10.0.0.1")


def test_what_people_wrote_is_escaped_on_the_pages() -> None:
    """A request text is the submitter's: in the list (and its live updates) it is text, never markup."""
    from starlette.templating import Jinja2Templates

    from projections.console.app import HERE

    rows = views.rows([{"tenant": "acme", "change_id": "c1", "status": "planning", "initiator": "alice",
                        "request": '<img src=x onerror="alert(1)">create directory /x'}], datetime.now(UTC))
    html = Jinja2Templates(directory=str(HERE / "templates")).get_template("_rows.html").render(rows=rows)
    assert "<img" not in html and "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in html
