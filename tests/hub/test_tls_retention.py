"""TLS on both listeners (a throwaway CA made with ``cryptography``) and telemetry
retention by bytes."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import ssl
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from edgehub.simnode import SimNode

from edgenode.protocol import UplinkRecord


def make_ca_and_server_cert(directory: Path) -> tuple[Path, Path, Path]:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgehub test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = (
        directory / "ca.pem",
        directory / "hub.pem",
        directory / "hub.key",
    )
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_path, cert_path, key_path


def test_tls_protects_node_links_and_the_api(hub_factory, tmp_path):
    ca, cert, key = make_ca_and_server_cert(tmp_path)
    hub = hub_factory("--tls-cert", str(cert), "--tls-key", str(key))
    assert hub.link.startswith("wss://")
    assert hub.api.startswith("https://")
    hub.ssl_context = ssl.create_default_context(cafile=str(ca))
    token = hub.node_add("a")

    async def join() -> int:
        node = SimNode(hub.link, token, "a", ssl_context=ssl.create_default_context(cafile=str(ca)))
        task = asyncio.create_task(node.run_once())
        await node.wait_until(lambda: node.revision == 1)
        task.cancel()
        untrusting = SimNode(hub.link, token, "a", ssl_context=ssl.create_default_context())
        try:
            await untrusting.run_once()
        except ssl.SSLCertVerificationError:
            return node.revision
        raise AssertionError("a client without the CA must not connect")

    assert asyncio.run(join()) == 1
    assert hub.ctl("--help").returncode == 0


def test_telemetry_is_kept_within_the_byte_budget_oldest_dropped_first(hub_factory):
    hub = hub_factory("--telemetry-max-bytes", "2000", "--housekeeping", "0.1")
    token = hub.node_add("a")
    hub.apply("apiVersion: edgenode.io/v1\nkind: Device\nmetadata: {name: d}\nspec: {node: a}\n")

    async def send() -> None:
        node = SimNode(hub.link, token, "a")
        task = asyncio.create_task(node.run_once())
        await node.wait_until(lambda: node.revision == 2)
        for seq in range(1, 41):
            body = {"kind": "telemetry", "device": "d", "data": {"n": seq, "pad": "x" * 80}}
            await node.send_uplink([UplinkRecord(seq, 5, json.dumps(body).encode())])
        await node.wait_until(lambda: len(node.acked_uplink) == 40)
        task.cancel()

    asyncio.run(send())
    deadline = time.monotonic() + 5
    while True:
        _, body = hub.call("GET", "/v1/devices/d/telemetry?limit=1000")
        if len(body["items"]) < 40 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    numbers = [item["record"]["data"]["n"] for item in body["items"]]
    assert 0 < len(numbers) < 40
    assert numbers == list(range(41 - len(numbers), 41))  # the newest are kept
    _, metrics = hub.call("GET", "/metrics")
    assert "edgehub_telemetry_dropped_total" in metrics
