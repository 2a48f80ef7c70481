"""What an App runs: environment order, Config files, missing Configs, the run key (which
changes exactly when what runs changes), the work dir (copies, never links to the cache;
replaced when an App changed them; no writes through the App's symlinks)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from edgenode.apps.plan import make_plan
from edgenode.apps.workdir import (
    ARTIFACT_MODE,
    WorkDirError,
    place_artifact,
    remove_stale,
    remove_tree,
    write_file,
)
from edgenode.node.configs import ConfigEntry
from edgenode.service import parse_desired

NAME = "sampler"


def resource(spec: dict[str, Any], revision: int | None = 1, generation: int = 1) -> Any:
    metadata: dict[str, Any] = {"name": NAME, "generation": generation}
    if revision is not None:
        metadata["annotations"] = {"edgenode.io/revision": str(revision)}
    body = {"apiVersion": "edgenode.io/v1", "kind": "App", "metadata": metadata, "spec": spec}
    return parse_desired(f"App/default/{NAME}", 1, json.dumps(body).encode())


BASE = {
    "node": "n1",
    "command": ["python3", "sampler.py"],
    "env": {"LEVEL": "2", "SHARED": "from-env"},
    "envFrom": [{"config": "tuning"}, {"config": "extra"}],
    "files": [{"config": "tuning", "path": "conf/tuning.json"}],
}
CONFIGS = {
    "tuning": ConfigEntry("tuning", {"interval": "5", "SHARED": "from-config", "bad-key": "x"}, 3),
    "extra": ConfigEntry("extra", {"interval": "9"}),
}


def test_env_from_configs_in_order_then_env_and_files_as_json():
    plan = make_plan(resource(BASE), CONFIGS)
    assert plan.error == ""
    assert plan.missing == ()
    assert plan.revision == 1
    assert plan.generation == 1
    assert dict(plan.env) == {"interval": "9", "SHARED": "from-env", "LEVEL": "2"}
    assert plan.skipped_env == ("tuning.bad-key",)
    assert plan.files == (("conf/tuning.json", CONFIGS["tuning"].file_bytes()),)


def test_a_config_that_is_not_on_the_node_is_missing():
    plan = make_plan(resource(BASE), {"extra": CONFIGS["extra"]})
    assert plan.missing == ("tuning",)
    assert plan.files == ()


def test_the_run_key_changes_exactly_when_what_runs_changes():
    key = make_plan(resource(BASE), CONFIGS).run_key
    same = [
        {**BASE, "restartPolicy": "Never"},
        {**BASE, "healthCheck": {"tcp": 80}},
        {**BASE, "terminationGracePeriodSeconds": 3},
        {**BASE, "stopSignal": "SIGINT"},
    ]
    for spec in same:
        assert make_plan(resource(spec), CONFIGS).run_key == key, spec
    assert make_plan(resource(BASE, generation=7), CONFIGS).run_key == key
    different = [
        {**BASE, "command": ["python3", "other.py"]},
        {**BASE, "env": {"LEVEL": "3"}},
        {**BASE, "resources": {"memoryMax": "64Mi"}},
        {**BASE, "files": [{"config": "tuning", "path": "t.json"}]},
    ]
    for spec in different:
        assert make_plan(resource(spec), CONFIGS).run_key != key, spec
    changed = {**CONFIGS, "tuning": ConfigEntry("tuning", {"interval": "6"}, 4)}
    assert make_plan(resource(BASE), changed).run_key != key
    unrelated = {**CONFIGS, "other": ConfigEntry("other", {"a": "b"})}
    assert make_plan(resource(BASE), unrelated).run_key == key
    assert make_plan(resource(BASE), {"extra": CONFIGS["extra"]}).run_key != key


def test_an_invalid_spec_is_an_error_not_an_exception():
    plan = make_plan(resource({**BASE, "restartPolicy": "Sometimes"}), CONFIGS)
    assert plan.spec is None
    assert plan.error.startswith("spec.restartPolicy: must be one of")
    assert make_plan(resource({**BASE, "restartPolicy": "Maybe"}), CONFIGS).run_key != plan.run_key


def test_without_the_revision_annotation_the_revision_is_zero():
    assert make_plan(resource(BASE, revision=None), CONFIGS).revision == 0


# --- The work dir ----------------------------------------------------------------------------


@pytest.fixture
def cache_file(tmp_path: Path) -> Path:
    source = tmp_path / "cache" / "abc"
    source.parent.mkdir()
    source.write_bytes(b"print('hi')\n")
    source.chmod(0o400)
    return source


def test_an_artifact_is_a_read_only_copy_never_a_link_to_the_cache(tmp_path: Path, cache_file):
    work = tmp_path / "work"
    record = place_artifact(work, "sampler.py", "d" * 64, cache_file, None)
    placed = work / "sampler.py"
    assert placed.read_bytes() == cache_file.read_bytes()
    assert placed.stat().st_ino != cache_file.stat().st_ino
    assert placed.stat().st_nlink == 1
    assert placed.stat().st_mode & 0o777 == ARTIFACT_MODE
    # Unchanged: kept as is.
    assert place_artifact(work, "sampler.py", "d" * 64, cache_file, record) == record
    # The App changed its copy: replaced, the cache untouched.
    placed.chmod(0o600)
    placed.write_bytes(b"tampered")
    again = place_artifact(work, "sampler.py", "d" * 64, cache_file, record)
    assert again != record
    assert placed.read_bytes() == b"print('hi')\n"
    assert cache_file.read_bytes() == b"print('hi')\n"


def test_config_files_are_written_when_they_change_and_stale_ones_removed(tmp_path: Path):
    work = tmp_path / "work"
    work.mkdir()
    write_file(work, "conf/a.json", b"{}")
    assert (work / "conf" / "a.json").stat().st_mode & 0o777 == 0o600
    mtime = (work / "conf" / "a.json").stat().st_mtime_ns
    write_file(work, "conf/a.json", b"{}")
    assert (work / "conf" / "a.json").stat().st_mtime_ns == mtime
    write_file(work, "b.json", b"{}")
    (work / "mine.txt").write_text("the App's own file")
    remove_stale(work, ["conf/a.json", "b.json"], ["b.json"])
    assert not (work / "conf" / "a.json").exists()
    assert (work / "b.json").exists()
    assert (work / "mine.txt").exists()


def test_nothing_is_written_through_a_symlink_the_app_made(tmp_path: Path):
    work, outside = tmp_path / "work", tmp_path / "outside"
    work.mkdir()
    outside.mkdir()
    os.symlink(outside, work / "conf")
    with pytest.raises(WorkDirError):
        write_file(work, "conf/a.json", b"{}")
    assert list(outside.iterdir()) == []
    os.symlink(outside / "target", work / "direct.json")
    write_file(work, "direct.json", b"{}")  # replaces the link itself
    assert not (outside / "target").exists()
    assert not (work / "direct.json").is_symlink()


def test_remove_tree_removes_read_only_copies(tmp_path: Path, cache_file):
    work = tmp_path / "work"
    place_artifact(work, "a", "d" * 64, cache_file, None)
    (work / "sub").mkdir()
    (work / "sub" / "f").write_text("x")
    (work / "sub").chmod(0o500)
    remove_tree(work)
    assert not work.exists()
