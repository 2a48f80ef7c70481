"""The container's health check reads the hub's own arguments (tests/deploy runs it in the
image); here its light parser is held equal to ``edgehub serve``'s."""

from __future__ import annotations

import pytest
from edgehub import healthcheck
from edgehub.cli import build_parser, split_host_port

ARGVS = [
    ["--data", "/d"],
    ["--data", "/d", "--api-listen", "0.0.0.0:8080"],
    ["--data", "/d", "--api-listen=127.0.0.1:9000", "--heartbeat", "5"],
    ["--data", "/d", "--api-l", "[::]:8080", "--tls-cert", "/c.pem", "--tls-key", "/k.pem"],
    ["--data", "/d", "--api-listen", "0.0.0.0:1", "--api-listen", "10.0.0.1:2"],
    ["--data", "/d", "--tls-c=/c.pem", "--tls-k=/k.pem", "--listen", "0.0.0.0:8443"],
]


@pytest.mark.parametrize("argv", ARGVS)
def test_the_health_checks_parser_reads_what_the_hub_reads(argv):
    hub = build_parser().parse_args(["serve", *argv])
    mine, _ = healthcheck.parser().parse_known_args(argv)
    # edgehub serve parses the address into (host, port); the health check keeps the text.
    assert (split_host_port(mine.api_listen), mine.tls_cert) == (hub.api_listen, hub.tls_cert)


def test_it_finds_the_hub_process_and_builds_the_url(tmp_path):
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "cmdline").write_bytes(b"/bin/sh\0-c\0sleep 1\0")
    (tmp_path / "7").mkdir()
    argv = ["/opt/edgehub/bin/python3", "/opt/edgehub/bin/edgehub", "serve", "--data", "/d"]
    argv += ["--api-listen", "0.0.0.0:8080", "--tls-cert", "/c", "--tls-key", "/k"]
    (tmp_path / "7" / "cmdline").write_bytes("\0".join(argv).encode() + b"\0")
    args = healthcheck.hub_arguments(tmp_path)
    assert args is not None
    assert healthcheck.health_url(args) == "https://127.0.0.1:8080/healthz"
    (tmp_path / "7" / "cmdline").write_bytes(b"/usr/bin/python3\0-m\0edgehub.healthcheck\0")
    assert healthcheck.hub_arguments(tmp_path) is None


@pytest.mark.parametrize(
    ("listen", "url"),
    [
        ("127.0.0.1:8080", "http://127.0.0.1:8080/healthz"),
        (":8080", "http://127.0.0.1:8080/healthz"),
        ("[::]:9", "http://127.0.0.1:9/healthz"),
        ("[::1]:9", "http://[::1]:9/healthz"),
        ("10.1.2.3:80", "http://10.1.2.3:80/healthz"),
    ],
)
def test_the_url_asks_loopback_when_the_hub_listens_on_every_address(listen, url):
    args, _ = healthcheck.parser().parse_known_args(["--api-listen", listen])
    assert healthcheck.health_url(args) == url
