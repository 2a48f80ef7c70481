"""wss:// with the hub's CA pinned by [hub] ca_file (certificates made by openssl here)."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.fakehub import Background, FakeHub, wait_for

CURVE = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


@pytest.fixture
def tls_hub(background: Background, tmp_path: Path) -> Iterator[FakeHub]:
    pki = tmp_path / "pki"
    pki.mkdir()
    openssl(
        "req",
        "-x509",
        *CURVE,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=edgenode test CA",
        cwd=pki,
    )
    openssl(
        "req", *CURVE, "-keyout", "hub.key", "-out", "hub.csr", "-subj", "/CN=localhost", cwd=pki
    )
    (pki / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "hub.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "hub.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        cwd=pki,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki / "hub.pem", pki / "hub.key")
    hub = FakeHub(background, ssl_context=context)
    hub.start()
    yield hub
    hub.stop()


def test_a_wss_hub_signed_by_the_pinned_ca_is_trusted(tls_hub: FakeHub, node, tmp_path):
    revision = tls_hub.publish([("Config/default/a", {"v": 1})])
    node.configure(tls_hub.url, hub={"ca_file": str(tmp_path / "pki" / "ca.pem")})
    node.start()
    wait_for(lambda: tls_hub.acked_revision.get("ship-7") == revision, 15, "the ack over TLS")
    assert node.link_state()["state"] == "connected"


def test_a_wss_hub_not_signed_by_a_trusted_ca_is_refused_clearly(tls_hub: FakeHub, node):
    node.configure(tls_hub.url)
    node.start()
    wait_for(lambda: "hub certificate not trusted" in node.log(), 15, "the TLS error")
    assert "certificate verify failed" in node.log() or "unable to get local issuer" in node.log()
    assert not tls_hub.hellos
    assert node.proc is not None
    assert node.proc.poll() is None
    assert "hub certificate not trusted" in node.status_json()["hub"]["last_error"]
