"""``runtime: container`` with the machine's engine and a tiny local image (``FROM
scratch`` + Debian's static busybox, built from a temporary context: no registry needed).
Skipped, with the reason printed, only where no engine answers; a node without an engine
reports the App Failed (tested without one)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest
from apps_harness import Harness, body, run

from edgenode.apps.container import container_name, find_engine

IMAGE = "edgenode-test-busybox:apps"
BUSYBOX = Path("/bin/busybox")
DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ENV PATH=/bin
CMD ["sh"]
"""


def engine_or_skip() -> str:
    engine, reason = asyncio.run(find_engine("auto"))
    if engine is None:
        print(f"SKIPPED container App tests: no container engine ({reason})")
        pytest.skip(f"no container engine: {reason}")
    return engine.path


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    engine = engine_or_skip()
    if subprocess.run([engine, "image", "inspect", IMAGE], capture_output=True).returncode == 0:
        return IMAGE
    assert BUSYBOX.exists(), "busybox-static is not installed (scripts/setup.sh installs it)"
    context = tmp_path_factory.mktemp("image")
    shutil.copy(BUSYBOX, context / "busybox")
    (context / "Dockerfile").write_text(DOCKERFILE)
    subprocess.run([engine, "build", "-q", "-t", IMAGE, str(context)], check=True, timeout=300)
    return IMAGE


def containers(engine: str, name: str) -> list[str]:
    out = subprocess.run(
        [engine, "ps", "-a", "--filter", f"name=^{name}$", "--format", "{{.ID}} {{.Status}}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split("\n")[:-1]


def spec(image: str, command: list[str], **extra: object) -> dict[str, object]:
    return {"node": "apps-ctr", "runtime": "container", "image": image, "command": command, **extra}


def test_a_container_app_runs_once_with_its_env_files_and_logs(tmp_path: Path, image: str):
    engine = engine_or_skip()
    harness = Harness(
        tmp_path,
        node="apps-ctr",
        apps={"container_runtime": "auto"},
        local_configs=[{"name": "tuning", "data": {"interval": "5"}}],
    )
    name = container_name("apps-ctr", "box")
    # A container of the same name, as a killed daemon might leave it: removed first.
    subprocess.run([engine, "rm", "-f", name], capture_output=True)
    subprocess.run([engine, "run", "-d", "--name", name, image, "sleep", "600"], check=True)
    script = 'echo "level=$LEVEL interval=$interval app=$EDGENODE_APP"; cat /app/t.json; sleep 600'

    async def scenario() -> None:
        async with harness:
            harness.apply(
                "App",
                "box",
                body(
                    "App",
                    "box",
                    spec(
                        image,
                        ["sh", "-c", script],
                        env={"LEVEL": "2"},
                        envFrom=[{"config": "tuning"}],
                        files=[{"config": "tuning", "path": "t.json"}],
                        terminationGracePeriodSeconds=5,
                        resources={"memoryMax": "64Mi", "cpuMax": "0.5"},
                    ),
                ),
            )
            status = await harness.phase("box", "Running", timeout=30)
            assert status["runtime"] == "container"
            assert status["engine"].startswith(("docker ", "podman "))
            assert status["limits"] == "engine"
            await harness.until(lambda: '"interval": "5"' in harness.log_text("box"), 20)
            assert "level=2 interval=5 app=box" in harness.log_text("box")
            running = containers(engine, name)
            assert len(running) == 1
            assert " Up " in f" {running[0]} "
            inspect = subprocess.run(
                [
                    engine,
                    "inspect",
                    "--format",
                    "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}",
                    name,
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            assert inspect.stdout.split() == [str(64 << 20), "500000000"]
            # Deleted: stopped (busybox sleep under --init stops on SIGTERM) and removed.
            harness.delete("App", "box")
            await harness.phase("box", "Stopped", timeout=20, reason="Removed")
            assert containers(engine, name) == []

    run(scenario)


def test_a_container_over_its_memory_limit_is_reported_oom_killed(tmp_path: Path, image: str):
    engine = engine_or_skip()
    harness = Harness(tmp_path, node="apps-ctr", apps={"container_runtime": "auto"})
    hog = 'x=$(head -c 64m /dev/zero | tr "\\0" a); echo survived'

    async def scenario() -> None:
        async with harness:
            harness.apply(
                "App",
                "hog",
                body(
                    "App",
                    "hog",
                    spec(
                        image,
                        ["sh", "-c", hog],
                        restartPolicy="Never",
                        resources={"memoryMax": "16Mi"},
                    ),
                ),
            )
            status = await harness.phase("hog", "Failed", timeout=30)
            assert status["reason"] == "OOMKilled", status
            assert status["lastExit"]["code"] == 137
            assert "survived" not in harness.log_text("hog")
            assert containers(engine, container_name("apps-ctr", "hog")) == []

    run(scenario)


def test_a_missing_image_is_a_start_failure_with_the_engines_words(tmp_path: Path, image: str):
    engine_or_skip()
    harness = Harness(tmp_path, node="apps-ctr", apps={"container_runtime": "auto"})

    async def scenario() -> None:
        async with harness:
            missing = "edgenode-test-no-such-image:never"
            harness.apply(
                "App", "ghost", body("App", "ghost", spec(missing, ["true"], restartPolicy="Never"))
            )
            status = await harness.phase("ghost", "Failed", timeout=60)
            assert status["reason"] == "StartFailed"
            assert status["message"].startswith(
                "cannot start: the container engine could not run it"
            )

    run(scenario)


def test_without_an_engine_a_container_app_is_failed(tmp_path: Path):
    harness = Harness(tmp_path, node="apps-ctr", apps={"container_runtime": "none"})

    async def scenario() -> None:
        async with harness:
            harness.apply("App", "c", body("App", "c", spec("busybox", ["true"])))
            status = await harness.phase("c", "Failed", reason="NoContainerEngine")
            assert status["message"] == (
                "no container engine on this node: [apps] container_runtime is none"
            )

    run(scenario)
