"""The browser console's routes on the edge (TestClient + FakePool): the pages, their static
ES modules with a JavaScript type, the language list, and /ops/status's figures and access
control. The pages' DOM contract (ids the browser tests rely on) is checked in the HTML."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from console import STATIC_DIR
from edge.app import create_app
from edge.metrics import bucket_quantile
from edge.routers.console import OpsStatus
from edge.settings import EdgeSettings
from moderation.protocol import WHISPER_LANGUAGES
from tests.unit.fakes import FakePool
from tests.unit.test_app import end, next_event, ready, send_audio
from tests.unit.test_auth import KEY, bearer, secured

INDEX_IDS = {"source", "language", "word-timestamps", "token", "start", "stop", "bleep", "bleep-delay", "state",
             "message", "meter", "p50", "p95", "segments", "summary", "reconnects"}
OPS_IDS = {"token", "sessions", "segments-per-s", "p50", "p95", "errors", "replicas", "ops-message"}
REVIEW_IDS = {"token", "status", "min-severity", "speaker", "queue", "transcript", "clip", "confirm", "dismiss",
              "decision", "speaker-incidents", "speaker-confirmed", "speaker-dismissed", "review-message"}
MODULE_IMPORT = re.compile(r"""^\s*import\s[^'"]*['"](\.[^'"]+)['"]""", re.M)


class Elements(HTMLParser):
    """Every element's attributes by id, and the local URLs the page loads."""

    def __init__(self) -> None:
        super().__init__()
        self.by_id: dict[str, tuple[str, dict[str, str | None]]] = {}
        self.assets: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if attributes.get("id"):
            self.by_id[attributes["id"]] = (tag, attributes)
        if tag in ("script", "link") and (url := attributes.get("src") or attributes.get("href")):
            self.assets.append(url)


def parsed(page: str) -> Elements:
    elements = Elements()
    elements.feed(page)
    return elements


def app(pool: FakePool | None = None, **settings) -> TestClient:
    return TestClient(create_app(EdgeSettings(**settings), pool=pool or FakePool()))


def test_the_console_and_the_ops_page_are_served_with_their_dom_contract():
    with app() as client:
        index, ops = client.get("/console"), client.get("/console/ops")
    assert index.status_code == ops.status_code == 200
    assert index.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in index.headers["content-security-policy"]
    page, operator = parsed(index.text), parsed(ops.text)
    assert INDEX_IDS <= page.by_id.keys() and OPS_IDS <= operator.by_id.keys()
    assert page.by_id["message"][1]["role"] == operator.by_id["ops-message"][1]["role"] == "alert"
    assert page.by_id["segments"][0] == "tbody" and operator.by_id["replicas"][0] == "tbody"
    assert (page.by_id["start"][0], page.by_id["stop"][0]) == ("button", "button")
    assert page.by_id["summary"][1].keys() >= {"hidden"}
    assert page.by_id["state"][1]["aria-live"] == "polite"
    sources = re.findall(r'<option value="(\w*)"', index.text.split('id="source"')[1].split("</select>")[0])
    assert sources == ["mic", "tab"]


def test_the_review_page_is_served_with_its_dom_contract_and_may_play_blob_clips():
    with app() as client:
        review = client.get("/console/review")
    assert review.status_code == 200 and review.headers["content-type"].startswith("text/html")
    assert "media-src 'self' blob:" in review.headers["content-security-policy"]
    elements = parsed(review.text)
    assert REVIEW_IDS <= elements.by_id.keys()
    assert elements.by_id["review-message"][1]["role"] == "alert" and elements.by_id["queue"][0] == "tbody"
    assert elements.by_id["clip"][0] == "audio"


@pytest.mark.parametrize("page, base", [("/console", "/"), ("/console/ops", "/console/"),
                                        ("/console/review", "/console/")])
def test_every_asset_a_page_loads_is_served_javascript_as_text_javascript(page, base):
    with app() as client:
        assets = parsed(client.get(page).text).assets
        answers = {url: client.get(base + url) for url in assets}
    assert assets and all(answer.status_code == 200 for answer in answers.values()), answers
    for url, answer in answers.items():
        if url.endswith(".js"):
            assert answer.headers["content-type"] == "text/javascript; charset=utf-8"
            assert answer.headers["cache-control"] == "no-cache"


def test_every_module_the_console_imports_is_a_static_file():
    """No build step: each relative import must be a file the edge serves as it is."""
    modules = sorted(STATIC_DIR.glob("*.js"))
    with app() as client:
        for module in modules:
            for target in MODULE_IMPORT.findall(module.read_text()):
                answer = client.get(f"/console/static/{target.removeprefix('./')}")
                assert answer.status_code == 200, f"{module.name} imports {target}"
                assert answer.headers["content-type"].startswith("text/javascript")
    assert {m.name for m in modules} >= {"console.js", "protocol.js", "resampler.js", "capture-worklet.js",
                                         "level.js", "ops.js", "review.js"}


def test_static_files_outside_the_static_folder_are_not_served():
    with app() as client:
        assert client.get("/console/static/%2e%2e/__init__.py").status_code == 404
        assert client.get("/console/static/missing.js").status_code == 404


def test_the_language_list_is_whispers_and_names_the_models_default():
    with app(FakePool()) as client:
        body = client.get("/console/languages.json").json()
    assert body == {"languages": sorted(WHISPER_LANGUAGES), "default": "ko"}


def test_ops_status_reports_sessions_segments_errors_latency_and_replicas():
    pool = FakePool()
    with app(pool) as client:
        with client.websocket_connect("/ws/audio") as ws:
            ready(ws)
            during = OpsStatus.model_validate(client.get("/ops/status").json())
            ws.send_text('{"type": "config", "language": "xx"}')
            assert next_event(ws).code == "bad_config"
            send_audio(ws)
            end(ws)
        status = OpsStatus.model_validate(client.get("/ops/status").json())
    assert during.sessions == 1 and status.sessions == 0
    assert status.status == "ready" and not status.draining
    assert status.segments_total == len(pool.calls) == status.segments["normal"] == status.latency.count
    assert status.errors == {"client:bad_config": 1}
    assert status.latency.p50_ms is not None and 0 < status.latency.p50_ms <= status.latency.p95_ms
    assert [(r.address, r.ready, r.in_flight, r.calls) for r in status.replicas] == [
        ("fake-triton:8001", True, 0, len(pool.calls))]


def test_ops_status_says_unavailable_while_no_replica_is_ready():
    with app(FakePool(up=False)) as client:
        status = client.get("/ops/status").json()
    assert status["status"] == "unavailable" and status["replicas"][0]["ready"] is False


def test_ops_status_is_guarded_like_metrics_and_the_pages_stay_open():
    with secured(FakePool()) as client:
        refused = client.get("/ops/status")
        allowed = client.get("/ops/status", headers=bearer(KEY))
        pages = [client.get(path).status_code for path in ("/console", "/console/ops", "/console/static/ops.js",
                                                           "/console/languages.json")]
    with secured(FakePool(), ops_auth=False) as client:
        opened = client.get("/ops/status").status_code
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert allowed.status_code == opened == 200
    assert pages == [200, 200, 200, 200]


@pytest.mark.parametrize("buckets, q, expected", [
    ([(0.5, 0.0), (1.0, 10.0), (float("inf"), 10.0)], 0.5, 0.75),
    ([(0.5, 10.0), (1.0, 10.0), (float("inf"), 10.0)], 0.95, 0.475),
    ([(0.5, 0.0), (1.0, 0.0), (float("inf"), 4.0)], 0.5, 1.0),
    ([(0.5, 0.0), (float("inf"), 0.0)], 0.5, None),
])
def test_latency_percentiles_are_interpolated_within_buckets_like_prometheus(buckets, q, expected):
    assert bucket_quantile(buckets, q) == (pytest.approx(expected) if expected is not None else None)
