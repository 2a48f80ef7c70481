"""docs/operations.md's configuration reference matches the config dataclasses.

The reference is written by hand (with the meaning of every key); this test holds it to
``edgenode.config``: every ``[section]`` of ``SECTIONS`` has a table listing exactly its
dataclass's fields, with the right type, default and ``EDGENODE_<SECTION>_<KEY>``
variable, and the ``[[device]]``/``[[route]]``/``[[config]]`` tables list exactly the keys
the parser accepts, with ``RouteSpec``'s defaults. A documented key that does not exist
fails as much as an undocumented one.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import subprocess
import sys
import tomllib
import typing
from pathlib import Path
from typing import Any

import pytest

from edgenode.config import (
    CONFIG_KEYS,
    DEFAULT_CONFIG_TEXT,
    DEVICE_KEYS,
    REQUIRED,
    ROUTE_KEYS,
    SECTIONS,
    env_name,
    parse_config,
)
from edgenode.devices.config import RouteSpec

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
TYPE_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean"}
HEADING = re.compile(r"^### `(\[\[?[a-z]+\]\]?)`\s*$")
REQUIRED_CELL = "required"
ABSENT_CELL = "absent"


def tables() -> dict[str, list[dict[str, str]]]:
    """Each ``### `[name]``` heading's table: a list of rows, column name → cell text."""
    found: dict[str, list[dict[str, str]]] = {}
    current: str | None = None
    header: list[str] = []
    for line in OPERATIONS.read_text(encoding="utf-8").splitlines():
        if match := HEADING.match(line):
            current, header = match.group(1), []
            found[current] = []
            continue
        if line.startswith("#"):
            current = None
        if current is None or not line.startswith("|"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not header:
            header = cells
        elif not set(cells[0]) <= set("- "):
            found[current].append(dict(zip(header, cells, strict=True)))
    return found


def code(cell: str) -> str:
    """The text inside a cell's backticks (the whole cell must be one code span)."""
    match = re.fullmatch(r"`([^`]*)`", cell)
    assert match, f"expected a `code` cell, got {cell!r}"
    return match.group(1)


def toml_value(cell: str) -> Any:
    return tomllib.loads(f"v = {code(cell)}")["v"]


TABLES = tables()


def test_every_section_and_array_has_a_table_and_no_other_does():
    expected = {f"[{name}]" for name in SECTIONS} | {"[[device]]", "[[route]]", "[[config]]"}
    assert set(TABLES) == expected


@pytest.mark.parametrize("section", list(SECTIONS))
def test_a_section_table_lists_every_field_with_its_type_default_and_variable(section):
    cls = SECTIONS[section]
    hints = typing.get_type_hints(cls)
    rows = {code(row["key"]): row for row in TABLES[f"[{section}]"]}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert list(rows) == list(fields), "keys documented in another order or missing/extra"
    for name, f in fields.items():
        row = rows[name]
        assert row["type"] == TYPE_NAMES[hints[name]], (section, name)
        assert code(row["environment"]) == env_name(section, name)
        assert row["meaning"], (section, name)
        if (section, name) in REQUIRED:
            assert row["default"] == REQUIRED_CELL, (section, name)
        else:
            assert f.default is not dataclasses.MISSING, (section, name)
            default = toml_value(row["default"])
            assert default == f.default, (section, name)
            assert type(default) is type(f.default), (section, name)


def test_every_required_key_is_marked_required():
    marked = {
        (section, code(row["key"]))
        for section in SECTIONS
        for row in TABLES[f"[{section}]"]
        if row["default"] == REQUIRED_CELL
    }
    assert marked == set(REQUIRED)


def test_the_device_table_lists_the_keys_the_parser_accepts():
    rows = {code(row["key"]): row for row in TABLES["[[device]]"]}
    assert tuple(rows) == DEVICE_KEYS
    assert rows["name"]["default"] == REQUIRED_CELL
    assert rows["desired"]["default"] == ABSENT_CELL
    assert rows["desired"]["type"] == "table"


def test_the_config_table_lists_the_keys_the_parser_accepts():
    rows = {code(row["key"]): row for row in TABLES["[[config]]"]}
    assert tuple(rows) == CONFIG_KEYS
    assert rows["name"]["default"] == REQUIRED_CELL
    assert toml_value(rows["data"]["default"]) == {}


def test_the_route_table_lists_the_keys_the_parser_accepts_with_routespec_defaults():
    rows = {code(row["key"]): row for row in TABLES["[[route]]"]}
    assert tuple(rows) == ROUTE_KEYS
    assert rows["from"]["default"] == REQUIRED_CELL
    defaults = {f.name: f.default for f in dataclasses.fields(RouteSpec)}
    assert toml_value(rows["to"]["default"]) == defaults["to"]
    assert toml_value(rows["priority"]["default"]) == defaults["priority"]
    assert toml_value(rows["enabled"]["default"]) == defaults["enabled"]
    assert defaults["ttl"] is None
    assert rows["ttl"]["default"] == ABSENT_CELL


def test_the_documented_defaults_are_the_defaults_edgenode_prints():
    """``edgenode config print-default`` and the reference agree key by key."""
    printed = tomllib.loads(DEFAULT_CONFIG_TEXT)
    for section in SECTIONS:
        for row in TABLES[f"[{section}]"]:
            if row["default"] != REQUIRED_CELL:
                key = code(row["key"])
                assert printed[section][key] == toml_value(row["default"]), (section, key)


def test_the_example_node_toml_is_a_valid_configuration():
    text = OPERATIONS.read_text(encoding="utf-8")
    example = text.split("<!-- doc-test: file node.toml -->\n```toml\n", 1)[1].split("```", 1)[0]
    config = parse_config(tomllib.loads(example), str(OPERATIONS.parent / "node.toml"), env={})
    assert config.node.name == "ship-7"
    assert [device.name for device in config.devices] == ["lamp"]


def test_the_hub_flags_table_lists_exactly_the_flags_of_edgehub_serve():
    """docs/hub.md's option table (which docs/operations.md links to) and ``edgehub serve
    --help`` name the same flags."""
    hub_md = OPERATIONS.with_name("hub.md").read_text(encoding="utf-8")
    table = hub_md.split("| option |", 1)[1].splitlines()[1:]  # the rows after the header
    rows = list(itertools.takewhile(lambda line: line.startswith("|"), table))
    documented = {flag for row in rows for flag in re.findall(r"`(--[a-z-]+)", row)}
    documented |= {flag for row in rows for flag in re.findall(r"/(--[a-z-]+)`", row)}
    result = subprocess.run(
        [str(Path(sys.executable).with_name("edgehub")), "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    flags = set(re.findall(r"(--[a-z][a-z-]+)", result.stdout)) - {"--help"}
    assert documented == flags
