"""The real edge (``python -m edge``) serving TLS with a self-signed certificate made here, and
authentication on: a ``wss://`` session with an API key gets ready, config and summary; without
the key the handshake gets HTTP 403. No audio is sent, so Triton is never needed: its address
points where nothing listens."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import sys
from pathlib import Path

import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edge.auth import key_line, new_api_key
from edge.client import connect_options
from scripts.service.launch import EDGE_START_TIMEOUT_S, ManagedProcess, free_port

pytestmark = pytest.mark.integration


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, valid for a day, and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "edge.crt", directory / "edge.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


async def config_and_end(url: str, token: str | None, cafile: Path) -> list[dict]:
    async with websockets.connect(url, **connect_options(url, token, cafile)) as ws:
        await ws.send(json.dumps({"type": "config", "language": "en"}))
        await ws.send(json.dumps({"type": "end"}))
        return [json.loads(message) async for message in ws]


def test_a_wss_session_with_an_api_key_over_tls(tmp_path, monkeypatch):
    cert_file, key_file = self_signed(tmp_path)
    key, port = new_api_key(), free_port()
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))  # the launcher's https health probe trusts it
    env = dict(os.environ, EDGE_HOST="127.0.0.1", EDGE_PORT=str(port), EDGE_TRITON_URL=f"127.0.0.1:{free_port()}",
               EDGE_AUTH="required", EDGE_API_KEY_HASHES=key_line("tls-test", key),
               EDGE_SSL_CERTFILE=str(cert_file), EDGE_SSL_KEYFILE=str(key_file))
    env.pop("TRITON_URL", None)
    url = f"wss://127.0.0.1:{port}/ws/audio"
    with open(tmp_path / "edge.log", "wb") as log:
        edge = ManagedProcess("edge", [sys.executable, "-m", "edge"], env=env, log=log)
        edge.start(f"https://127.0.0.1:{port}/healthz", EDGE_START_TIMEOUT_S)
        try:
            events = asyncio.run(config_and_end(url, key, cert_file))
            with pytest.raises(websockets.InvalidStatus) as refusal:
                asyncio.run(config_and_end(url, None, cert_file))
        finally:
            edge.stop()
    assert [e["type"] for e in events] == ["ready", "config", "summary"]
    assert events[1]["language"] == "en" and events[2]["segments"] == 0
    assert refusal.value.response.status_code == 403
    assert key not in (tmp_path / "edge.log").read_text()  # the credential never reaches the log
