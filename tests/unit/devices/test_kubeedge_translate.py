"""python -m edgenode.devices.kubeedge.translate: manifests in, edgenode resources out."""

from __future__ import annotations

import json

from edgenode.devices.kubeedge.translate import main

DEVICE = {
    "apiVersion": "devices.kubeedge.io/v1beta1",
    "kind": "Device",
    "metadata": {"name": "thermo"},
    "spec": {"nodeName": "pi-1", "protocol": {"protocolName": "modbus"}},
}


def test_json_in_resource_out(tmp_path, capsys):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(DEVICE))
    assert main([str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert (
        out[0] == f"# {path} (document 1): KubeEdge device default/thermo is edgenode device/thermo"
    )
    assert out[-1] == "# ignored: spec.protocol"
    resource = json.loads("\n".join(out[1:-1]))
    assert resource["spec"]["node"] == "pi-1"


def test_yaml_documents_and_errors(tmp_path, capsys):
    path = tmp_path / "d.yaml"
    path.write_text(
        "apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nmetadata: {name: a}\n"
        "spec: {nodeName: n}\n---\n---\n"
        "apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nmetadata: {name: B}\n"
    )
    assert main([str(path)]) == 1
    captured = capsys.readouterr()
    assert "edgenode device/a" in captured.out
    assert captured.err == (
        f"{path} (document 2): metadata.name: must be a Kubernetes name, not 'B'\n"
    )


def test_unreadable_files(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [unclosed\n")
    assert main([str(bad), str(tmp_path / "missing.json")]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: not YAML" in err
    assert "missing.json" in err


def test_no_arguments(capsys):
    assert main([]) == 2
    assert "translate" in capsys.readouterr().err
