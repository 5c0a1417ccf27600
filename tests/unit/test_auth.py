"""Access control of the edge in-process (TestClient + FakePool): API keys, HS256/RS256 JWTs, the
per-key session limit, the browser Origin allow-list, the explicit open mode and the ops endpoints."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from edge.app import create_app
from edge.auth import EdgeConfigError, key_line, new_api_key, serving_options
from edge.settings import EdgeSettings
from moderation.protocol import ErrorCode, SummaryEvent
from scripts.service import make_api_key
from tests.unit.fakes import FakePool
from tests.unit.test_app import end, ready, send_audio, until_close

KEY = new_api_key()
JWT_SECRET = "a-test-secret-of-at-least-32-bytes!!"
POLICY_VIOLATION = 1008


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def hs256(sub: str = "alice", exp_in_s: float = 300, **claims) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time() + exp_in_s), **claims}, JWT_SECRET, algorithm="HS256")


def secured(pool: FakePool, **settings) -> TestClient:
    settings = {"auth": "required", "api_key_hashes": key_line("desktop", KEY), **settings}
    return TestClient(create_app(EdgeSettings(**settings), pool=pool))


def refused(app: TestClient, url: str = "/ws/audio", **kwargs) -> int:
    """The close code of a handshake the edge refuses before accepting it."""
    with pytest.raises(WebSocketDisconnect) as refusal, app.websocket_connect(url, **kwargs):
        pass
    return refusal.value.code


def one_session(app: TestClient, url: str = "/ws/audio", **kwargs) -> list:
    with app.websocket_connect(url, **kwargs) as ws:
        ready(ws)
        send_audio(ws)
        events, code = end(ws)
    assert code == 1000
    return events


@pytest.mark.parametrize("headers, url", [
    ({}, "/ws/audio"),
    (bearer("sme_wrong"), "/ws/audio"),
    ({}, "/ws/audio?token=sme_wrong"),
    ({"Authorization": f"Basic {KEY}"}, "/ws/audio"),
    (bearer(hs256()), "/ws/audio"),  # a JWT, but no JWT key is configured
])
def test_a_missing_or_wrong_credential_is_refused_before_the_session_starts(headers, url):
    pool = FakePool()
    with secured(pool) as app:
        code = refused(app, url, headers=headers)
        metrics = app.get("/metrics", headers=bearer(KEY)).text
    assert code == POLICY_VIOLATION
    assert pool.calls == [] and "edge_active_sessions 0.0" in metrics


@pytest.mark.parametrize("how", ["header", "query"])
def test_a_valid_api_key_opens_a_session(how):
    pool = FakePool()
    with secured(pool) as app:
        if how == "header":
            events = one_session(app, headers=bearer(KEY))
        else:
            events = one_session(app, f"/ws/audio?token={KEY}")
    assert isinstance(events[-1], SummaryEvent) and pool.calls


def test_a_valid_hs256_jwt_opens_a_session_and_an_expired_one_is_refused():
    pool = FakePool()
    with secured(pool, jwt_secret=JWT_SECRET) as app:
        events = one_session(app, headers=bearer(hs256()))
        calls = len(pool.calls)
        expired = refused(app, headers=bearer(hs256(exp_in_s=-3600)))
        forged = refused(app, headers=bearer(jwt.encode({"sub": "x", "exp": int(time.time()) + 60},
                                                        "another-secret-of-at-least-32-bytes", algorithm="HS256")))
        no_exp = refused(app, headers=bearer(jwt.encode({"sub": "x"}, JWT_SECRET, algorithm="HS256")))
    assert isinstance(events[-1], SummaryEvent) and calls == len(pool.calls) > 0
    assert expired == forged == no_exp == POLICY_VIOLATION


def test_audience_and_issuer_are_checked_when_configured():
    with secured(FakePool(), jwt_secret=JWT_SECRET, jwt_audience="edge", jwt_issuer="https://idp") as app:
        one_session(app, headers=bearer(hs256(aud="edge", iss="https://idp")))
        wrong_aud = refused(app, headers=bearer(hs256(aud="other", iss="https://idp")))
        no_iss = refused(app, headers=bearer(hs256(aud="edge")))
    assert wrong_aud == no_iss == POLICY_VIOLATION


def test_an_rs256_jwt_signed_by_the_configured_public_keys_owner_opens_a_session(tmp_path):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "jwt.pub").write_bytes(public_pem)
    token = jwt.encode({"sub": "bob", "exp": int(time.time()) + 300}, private, algorithm="RS256")
    pool = FakePool()
    with secured(pool, jwt_public_key_file=str(tmp_path / "jwt.pub")) as app:
        events = one_session(app, headers=bearer(token))
        hs_token = refused(app, headers=bearer(hs256()))  # HS256 is not configured: no algorithm confusion
    assert isinstance(events[-1], SummaryEvent) and hs_token == POLICY_VIOLATION


def test_the_per_key_limit_refuses_one_session_too_many_and_gives_slots_back():
    other = new_api_key()
    hashes = f"{key_line('desktop', KEY)}\n{key_line('web', other)}"
    with secured(FakePool(), api_key_hashes=hashes, max_sessions_per_key=1) as app:
        with app.websocket_connect("/ws/audio", headers=bearer(KEY)) as first:
            ready(first)
            with app.websocket_connect("/ws/audio", headers=bearer(KEY)) as second:
                refusal, code = until_close(second)
            with app.websocket_connect("/ws/audio", headers=bearer(other)) as another_key:
                ready(another_key)
                end(another_key)
            end(first)
        again = one_session(app, headers=bearer(KEY))
    assert [(e.code, e.message) for e in refusal] == [(ErrorCode.SERVER_BUSY,
                                                      "too many sessions for this credential, retry later")]
    assert code == 1013 and isinstance(again[-1], SummaryEvent)


def test_browser_origins_must_be_on_the_allow_list():
    allowed = {"Origin": "https://app.example.com", **bearer(KEY)}
    with secured(FakePool(), allowed_origins="https://app.example.com, https://admin.example.com") as app:
        one_session(app, headers=allowed)
        one_session(app, headers=bearer(KEY))  # no Origin: a native client
        foreign = refused(app, headers={"Origin": "https://evil.example", **bearer(KEY)})
    with secured(FakePool()) as app:
        no_list = refused(app, headers=allowed)  # empty list: no browser origin is allowed
    assert foreign == no_list == POLICY_VIOLATION


def test_the_origin_list_applies_also_with_authentication_off():
    with TestClient(create_app(EdgeSettings(auth="none"), pool=FakePool())) as app:
        assert refused(app, headers={"Origin": "https://evil.example"}) == POLICY_VIOLATION


def test_the_edges_own_pages_are_same_origin_and_always_allowed():
    """The console the edge serves connects from the edge's own host (any scheme: a proxy may
    terminate TLS); a look-alike host is still foreign."""
    with TestClient(create_app(EdgeSettings(auth="none"), pool=FakePool())) as app:
        for origin in ("http://testserver", "https://testserver"):
            one_session(app, headers={"Origin": origin})
        assert refused(app, headers={"Origin": "https://testserver.evil.example"}) == POLICY_VIOLATION


def test_open_mode_only_when_configured():
    with TestClient(create_app(EdgeSettings(auth="none", api_key_hashes=key_line("d", KEY)),
                               pool=FakePool())) as app:
        one_session(app)  # EDGE_AUTH=none: open even though keys exist
    with secured(FakePool()) as app:  # keys configured, EDGE_AUTH unset or required: closed
        assert refused(app) == POLICY_VIOLATION
    with TestClient(create_app(EdgeSettings(api_key_hashes=key_line("d", KEY)), pool=FakePool())) as app:
        assert refused(app) == POLICY_VIOLATION
    with pytest.raises(EdgeConfigError, match="EDGE_AUTH=required"):
        create_app(EdgeSettings(auth="required"), pool=FakePool())
    with pytest.raises(SystemExit, match="EDGE_AUTH=none"):
        serving_options(EdgeSettings())  # python -m edge never serves an unchosen mode
    assert serving_options(EdgeSettings(auth="none")) == {}


def test_healthz_stays_open_and_readyz_and_metrics_follow_ops_auth():
    with secured(FakePool()) as app:
        healthz = app.get("/healthz").status_code
        closed = [app.get(path).status_code for path in ("/readyz", "/metrics")]
        with_key = [app.get(path, headers=bearer(KEY)).status_code for path in ("/readyz", "/metrics")]
    with secured(FakePool(), ops_auth=False) as app:
        opened = [app.get(path).status_code for path in ("/readyz", "/metrics")]
    assert healthz == 200 and closed == [401, 401] and with_key == opened == [200, 200]


def test_bad_key_entries_stop_the_edge_with_their_place():
    with pytest.raises(EdgeConfigError, match="EDGE_API_KEY_HASHES, entry 2"):
        create_app(EdgeSettings(auth="required", api_key_hashes=f"{key_line('a', KEY)}\nb sha256:123"),
                   pool=FakePool())


def test_make_api_key_prints_a_key_its_hash_line_accepts(tmp_path, capsys):
    keys_file = tmp_path / "keys.txt"
    assert make_api_key.main(["ci-bot", "--append", str(keys_file)]) == 0
    key = capsys.readouterr().out.strip()
    assert key not in keys_file.read_text()  # only the hash is stored
    with TestClient(create_app(EdgeSettings(auth="required", api_keys_file=str(keys_file)), pool=FakePool())) as app:
        one_session(app, headers=bearer(key))


def test_secrets_stay_out_of_the_settings_repr():
    settings = EdgeSettings(jwt_secret=JWT_SECRET, api_key_hashes=key_line("d", KEY))
    assert JWT_SECRET not in repr(settings) and key_line("d", KEY) not in repr(settings)


def test_token_query_parameters_never_reach_the_logs():
    import logging

    from edge.__main__ import RedactTokens

    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, '%s - "WebSocket %s" [accepted]',
                               ("127.0.0.1:5000", "/ws/audio?lang=en&token=sme_SECRET123&x=1"), None)
    RedactTokens().filter(record)
    assert "SECRET" not in record.getMessage() and "token=<redacted>&x=1" in record.getMessage()


def test_a_jwt_with_a_malformed_algorithm_header_is_refused_not_crashed():
    import base64
    import json

    from edge.auth import AuthError, JwtVerifier

    header = base64.urlsafe_b64encode(json.dumps({"alg": ["HS256"], "typ": "JWT"}).encode()).rstrip(b"=")
    token = header.decode() + ".e30.c2ln"
    with pytest.raises(AuthError):
        JwtVerifier({"HS256": "secret-of-at-least-32-bytes-length!"}, None, None).verify(token)
