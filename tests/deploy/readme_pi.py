"""README.md's "Install a node on a Raspberry Pi" steps, as the deploy tests run them.

The steps are read from the README itself (the ``sh`` block that enables the unit), so a
change there changes what the tests run. Each step runs where the README says: the
operator's machine (the host) or the node (a container). Three are adapted, nothing else:

- ``sudoedit`` (interactive) becomes the edits the README's next paragraph lists;
- ``journalctl -u edgenode -f`` (follows forever) becomes ``--no-pager``;
- the wheel of the node's own CPU replaces ``..._aarch64.whl``.

The node has no access to the package index here (nor has an offline site): pip finds
the dependencies in a wheelhouse through ``/etc/pip.conf`` (``no-index``, ``find-links``),
as README.md says for offline sites.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from docs.doc_blocks import read_blocks

ROOT = Path(__file__).resolve().parents[2]
NODE_NAME = "pi-1"
CONFIG = "/etc/edgenode/edgenode.toml"
SYSTEMD_WORDS = ("systemctl", "journalctl", "edgenode.service")
"""Steps that need systemd as PID 1 (left out where the node runs without it)."""


@dataclass(frozen=True)
class Step:
    where: str
    """``host`` (the operator's machine), ``node``, ``edit`` (the sudoedit step) or
    ``start`` (``systemctl enable --now`` where there is no systemd)."""
    command: str


def readme_steps() -> list[str]:
    blocks = [
        block
        for block in read_blocks(ROOT / "README.md")
        if block.lang == "sh" and "systemctl enable --now edgenode" in block.text
    ]
    assert len(blocks) == 1, "README.md has one block of Raspberry Pi install steps"
    return [command.text for command in blocks[0].commands()]


def pi_steps(machine: str, *, systemd: bool) -> list[Step]:
    """The README's steps for a node whose wheel is ``..._MACHINE.whl``; without
    ``systemd`` the steps that need it are left out, but for ``start`` where the caller
    starts the daemon as the unit would."""
    steps: list[Step] = []
    for command in readme_steps():
        if "# on the operator's machine" in command:
            steps.append(Step("host", command))
        elif command.startswith("sudoedit "):
            steps.append(Step("edit", command))
        elif not systemd and "systemctl enable --now edgenode" in command:
            steps.append(Step("start", command))  # the caller starts `edgenode run` itself
        elif not systemd and any(word in command for word in SYSTEMD_WORDS):
            continue
        else:
            command = command.replace(
                "journalctl -u edgenode -f", "journalctl -u edgenode --no-pager"
            )
            steps.append(Step("node", command.replace("_aarch64.whl", f"_{machine}.whl")))
    return steps


def edit_config(text: str, hub_url: str) -> str:
    """What the README says to set in ``edgenode.toml`` (each key must be found once)."""
    edits = [
        ("node", "name", f'"{NODE_NAME}"'),
        ("node", "data_dir", '"/var/lib/edgenode"'),
        ("hub", "url", f'"{hub_url}"'),
        ("hub", "token_file", '"/etc/edgenode/token"'),
    ]
    for section, key, value in edits:
        pattern = re.compile(
            rf"(^\[{section}\]$(?:\n(?!\[).*)*?\n){key}\s*=\s*\"[^\"]*\"", re.MULTILINE
        )
        text, count = pattern.subn(rf"\g<1>{key} = {value}", text)
        assert count == 1, f"[{section}] {key} not found once in the default config"
    return text
