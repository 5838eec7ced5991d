"""The generated Grafana dashboard, ``andes dashboard push`` and the ``andes top`` view.

``push`` runs against a local HTTP server (a thread in this process) that answers like
Grafana's folder and dashboard API and records each call: ``grafana-client`` talks through
``niquests``, which request-mocking libraries do not see.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from rich.console import Console

from andes.cli import main
from andes.observe.dashboard import DASHBOARD_FILE, DASHBOARD_UID, PANELS, all_queries, dashboard, render_json
from andes.observe.grafana import push_dashboard
from andes.observe.top import COLUMNS, SUMMARY, Snapshot, fetch, render
from andes.serve.metrics import ALL_METRICS


# ------------------------------------------------------------------------------- dashboard
def test_committed_dashboard_is_what_the_definitions_generate():
    assert DASHBOARD_FILE.read_text() == render_json(), \
        "k8s/grafana/andes-dashboard.json is stale: run `andes dashboard write`"


def test_every_query_names_only_defined_metrics():
    known = set()
    for s in ALL_METRICS:
        parts = ("_bucket", "_sum", "_count") if s.kind == "histogram" else ()
        known |= {s.series} | {s.series + x for x in parts}
    used = {name for q in all_queries() + list(COLUMNS.values()) + list(SUMMARY.values())
            for name in re.findall(r"\bray_andes_\w+", q)}
    assert used and used <= known
    # Every metric is shown somewhere.
    assert {s.series for s in ALL_METRICS} <= {u.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")
                                                 for u in used}


def test_dashboard_has_the_panels_operators_ask_for():
    titles = " | ".join(p.title for p in PANELS).lower()
    for words in ("qoe distribution", "mean and p10", "0.95", "time to first token", "delivered tds",
                  "running, waiting", "kv cache", "preemptions per second", "policy time", "rejections",
                  "router headroom"):
        assert words in titles
    board = dashboard()
    assert board["uid"] == DASHBOARD_UID
    assert [p["type"] for p in board["panels"]][0] == "heatmap"
    assert board["panels"][0]["targets"][0]["format"] == "heatmap"
    assert all(p["datasource"]["uid"] == "${datasource}" for p in board["panels"])


# ----------------------------------------------------------------------------------- push
class FakeGrafana(BaseHTTPRequestHandler):
    """Answers Grafana's folder and dashboard calls; records (method, path, auth, body)."""

    calls: list = []
    folders: list = [{"uid": "f-existing", "title": "Existing"}]

    def _answer(self, status: int, body) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.calls.append((self.command, self.path.split("?")[0], self.headers.get("Authorization"), body))
        return body

    def do_GET(self):
        self._record()
        self._answer(200, self.folders) if self.path.startswith("/api/folders") else self._answer(404, {})

    def do_POST(self):
        body = self._record()
        if self.path == "/api/folders":
            self._answer(200, {"uid": "f-new", "title": body["title"]})
        elif self.path == "/api/dashboards/db":
            if body["dashboard"].get("uid") is None:
                return self._answer(400, {"message": "no uid"})
            self._answer(200, {"status": "success", "uid": body["dashboard"]["uid"], "version": 1,
                               "url": f"/d/{body['dashboard']['uid']}/andes"})
        else:
            self._answer(404, {"message": "not found"})

    def log_message(self, *args):
        pass


@pytest.fixture
def grafana():
    FakeGrafana.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeGrafana)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_push_creates_the_folder_and_posts_the_dashboard_with_the_token(grafana):
    answer = push_dashboard(grafana, dashboard(), token="s3cret", folder="Andes")
    assert answer["uid"] == DASHBOARD_UID
    methods = [(m, p) for m, p, _, _ in FakeGrafana.calls]
    assert methods == [("GET", "/api/folders"), ("POST", "/api/folders"), ("POST", "/api/dashboards/db")]
    assert all(auth == "Bearer s3cret" for _, _, auth, _ in FakeGrafana.calls)
    posted = FakeGrafana.calls[-1][3]
    assert posted["folderUid"] == "f-new" and posted["overwrite"] is True
    assert posted["dashboard"]["uid"] == DASHBOARD_UID and posted["dashboard"]["id"] is None
    assert len(posted["dashboard"]["panels"]) == len(PANELS)


def test_push_reuses_an_existing_folder_and_the_command_prints_grafanas_answer(grafana, capsys):
    assert main(["dashboard", "push", "--url", grafana, "--folder", "Existing"]) == 0
    assert [(m, p) for m, p, _, _ in FakeGrafana.calls] == [("GET", "/api/folders"), ("POST", "/api/dashboards/db")]
    assert FakeGrafana.calls[-1][3]["folderUid"] == "f-existing"
    assert json.loads(capsys.readouterr().out)["uid"] == DASHBOARD_UID


def test_push_failures_are_one_line(grafana, capsys):
    assert main(["dashboard", "push", "--url", grafana + "/nothing-here"]) == 2
    assert "refused the dashboard" in capsys.readouterr().err
    assert main(["dashboard", "push", "--url", "http://127.0.0.1:9"]) == 2
    assert "andes dashboard: error:" in capsys.readouterr().err


def test_dashboard_write_regenerates_the_file(tmp_path):
    out = tmp_path / "d.json"
    assert main(["dashboard", "write", "--out", str(out)]) == 0
    assert out.read_text() == render_json()


# ------------------------------------------------------------------------------------ top
def canned(url: str, expr: str) -> list[dict]:
    """Prometheus answers for two replicas; the second is struggling."""
    values = {"QoE mean": (0.99, 0.71), "QoE p10": (0.97, 0.42), "running": (12, 30), "waiting": (0, 7),
              "swapped": (0, 3), "KV": (0.4, 0.97), "preempt/s": (0.0, 1.5), "step ms": (45.0, 80.0),
              "headroom": (0.93, -0.2)}
    for column, q in COLUMNS.items():
        if q == expr:
            replicas = ("SERVE_REPLICA::a", "SERVE_REPLICA::b")
            return [{"metric": {"replica": r}, "value": [0, str(v)]} for r, v in zip(replicas, values[column])]
    summary = {"req/s": 4.2, "QoE mean": 0.9, "QoE p10": 0.5, "QoE>0.95": 0.8, "TTFT p90 s": 1.3}
    for name, q in SUMMARY.items():
        if q == expr:
            return [{"metric": {}, "value": [0, str(summary[name])]}]
    raise AssertionError(f"unexpected query {expr}")


def test_top_renders_one_frame_per_replica():
    snap = fetch("http://prom", ask=canned)
    assert snap.rows["SERVE_REPLICA::b"]["waiting"] == 7 and snap.summary["req/s"] == 4.2
    console = Console(record=True, width=160)
    console.print(render(snap, "http://prom"))
    text = console.export_text()
    rows = {cells[0]: cells[1:] for line in text.splitlines() if "SERVE_REPLICA" in line
            for cells in [[c.strip() for c in line.split("\u2502")[1:-1]]]}
    assert rows["SERVE_REPLICA::a"] == ["0.99", "0.97", "12", "0", "0", "40%", "0.00", "45.00", "0.93"]
    assert rows["SERVE_REPLICA::b"][4:7] == ["3", "97%", "1.50"]
    assert "req/s 4.20" in text and "QoE>0.95 80%" in text


def test_top_says_when_prometheus_is_unreachable():
    def down(url, expr):
        raise OSError("connection refused")

    console = Console(record=True, width=120)
    console.print(render(fetch("http://prom", ask=down)))
    assert "error: connection refused" in console.export_text()
    assert render(Snapshot()) is not None


def test_the_guide_names_every_metric():
    guide = (DASHBOARD_FILE.parents[2] / "docs" / "observability.md").read_text()
    assert [s.name for s in ALL_METRICS if f"`{s.name}`" not in guide] == []
