"""docs/operations.md's hand set-up says what a newcomer without systemd needs (issue 18):
how to start Mosquitto and check it without ``systemctl``, that nodes do not share a
broker, and that the hub's desired replaces a ``[[device]]`` table's. The commands
themselves run in ``test_doc_commands.py``; this holds the page to saying them."""

from __future__ import annotations

from pathlib import Path

from doc_blocks import read_blocks

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _examples_section() -> str:
    text = (DOCS / "operations.md").read_text(encoding="utf-8")
    return text[text.index("## The examples") : text.index("## Configuration reference")]


def test_the_hand_set_up_starts_mosquitto_without_systemd():
    set_up = next(
        block
        for block in read_blocks(DOCS / "operations.md")
        if block.lang == "sh" and "edgehub serve --data hub-data" in block.text
    )
    assert "mosquitto -c mosquitto.conf -d" in set_up.text
    assert "deploy/mosquitto/edgenode.conf" in set_up.text  # the settings a node needs
    # A check that needs no systemd, run for real by the doc test.
    checks = [
        block
        for block in read_blocks(DOCS / "operations.md")
        if block.runnable and "$SYS/broker/version" in block.text
    ]
    assert checks


def test_the_examples_say_one_broker_per_node_and_whose_desired_wins():
    section = _examples_section()
    assert "One broker per node" in section
    assert "the hub's `spec.desired` replaces it" in section


def test_troubleshooting_checks_the_broker_without_systemd_too():
    text = (DOCS / "troubleshooting.md").read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if "Connection refused` | Mosquitto" in line)
    assert "systemctl status mosquitto" in row
    assert "$SYS/broker/version" in row
    assert "mosquitto -c mosquitto.conf -d" in row
