"""Staged rollouts at a real ``edgehub serve``: five nodes (the real NodeProtocol over real
WebSockets) run what their AppAssignment says and report it with ``app-status`` records,
as the node's App service does — a "crash" command fails there and is reported rolled
back. Waves go in order; a bad revision aborts in the canary and no later wave ever sees
it; ``edgectl rollout status|history|pause|resume|undo`` drive and report it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from edgehub.simnode import SimNode

from edgenode.protocol import UplinkRecord

WAIT = 30.0
NODES = {
    "c1": "{ring: canary, site: north}",
    "n1": "{site: north}",
    "n2": "{site: north}",
    "s1": "{site: south}",
    "s2": "{site: south}",
}
NODE = """
apiVersion: edgenode.io/v1
kind: Node
metadata: {{name: {name}, labels: {labels}}}
"""
APP = """
apiVersion: edgenode.io/v1
kind: App
metadata: {{name: svc}}
spec:
  nodeSelector: {{}}
  command: [{command}]
  paused: {paused}
  strategy:
    waves:
      - {{name: canary, nodeSelector: {{ring: canary}}}}
      - {{name: north, nodeSelector: {{site: north}}, maxUnavailable: 1}}
      - {{name: rest}}
    minReadySeconds: 0.5
    progressDeadlineSeconds: 60
"""


class Agent:
    """One simulated node running its assignments: a revision whose command says
    "crash" fails and is reported rolled back, anything else is ready at once."""

    def __init__(self, hub: Any, name: str, token: str) -> None:
        self.node = SimNode(hub.link, token, name)
        self.name = name
        self.seq = 0
        self.running = 0
        self.seen: list[int] = []
        self.task: asyncio.Task[Any] | None = None
        self.watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.node.run_once())
        async with asyncio.timeout(WAIT):
            await self.node.welcomed.wait()
        self.watcher = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        for task in (self.watcher, self.task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _watch(self) -> None:
        key = f"AppAssignment/default/svc.{self.name}"
        while True:
            found = self.node.desired.get(key)
            revision = found[1]["spec"]["revision"] if found else 0
            if revision and revision not in self.seen:
                self.seen.append(revision)
                template = found[1]["spec"]["template"]
                await self._run(revision, template)
            await asyncio.sleep(0.05)

    async def _run(self, revision: int, template: dict[str, Any]) -> None:
        record: dict[str, Any] = {"kind": "app-status", "app": "svc"}
        if "crash" in template["command"]:
            record |= {"revision": self.running, "ready": self.running > 0,
                       "readySince": time.time(), "failedRevision": revision,
                       "rolledBack": True, "phase": "Running"}  # fmt: skip
        else:
            self.running = revision
            record |= {"revision": revision, "ready": True, "readySince": time.time(),
                       "phase": "Running"}  # fmt: skip
        self.seq += 1
        await self.node.send_uplink([UplinkRecord(self.seq, 4, json.dumps(record).encode())])


def rollout(hub: Any) -> dict[str, Any]:
    _, view = hub.call("GET", "/v1/apps/svc")
    return dict(view["status"].get("rollout") or {})


def reached(hub: Any, revision: int, state: str) -> bool:
    now = rollout(hub)
    return now.get("revision") == revision and now.get("state") == state


def test_waves_in_order_an_abort_in_the_canary_pause_resume_and_undo(hub):
    tokens = {name: hub.node_add(name) for name in NODES}
    for name, labels in NODES.items():
        assert hub.apply(NODE.format(name=name, labels=labels))[0] == 200

    async def until(predicate: Any, what: str) -> Any:
        deadline = time.monotonic() + WAIT
        while not (value := await asyncio.to_thread(predicate)):
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.1)
        return value

    def status(*extra: str) -> Any:
        return hub.ctl("rollout", "status", "app/svc", *extra)

    async def scenario() -> None:
        agents = {name: Agent(hub, name, token) for name, token in tokens.items()}
        for agent in agents.values():
            await agent.start()
        try:
            hub.apply(APP.format(command='"serve", "v1"', paused="false"))
            await until(lambda: reached(hub, 1, "Complete"), "revision 1 out")
            done = await asyncio.to_thread(status)
            assert done.returncode == 0, done.stdout + done.stderr
            assert "wave north: 2 of 2 done" in done.stdout
            # Revision 2: wave by wave, in order.
            hub.apply(APP.format(command='"serve", "v2"', paused="false"))
            await until(lambda: reached(hub, 2, "Complete"), "revision 2 out")
            assert all(agent.seen == [1, 2] for agent in agents.values())
            # Revision 3 crashes: the canary rolls back, the rollout aborts, and no node of
            # a later wave ever receives it; the canary is told to go back to 2.
            hub.apply(APP.format(command='"crash"', paused="false"))
            await until(lambda: reached(hub, 3, "Aborted"), "revision 3 aborted")
            aborted = await asyncio.to_thread(status)
            assert aborted.returncode == 1
            assert "c1: rolled back from revision 3" in aborted.stdout
            await asyncio.sleep(1.5)
            assert agents["c1"].seen == [1, 2, 3]
            for name in ("n1", "n2", "s1", "s2"):
                assert 3 not in agents[name].seen
            _, assignment = hub.call("GET", "/v1/appassignments/svc.c1")
            assert assignment["spec"]["revision"] == 2
            # Undo: the previous good revision again, on every node at once.
            undone = await asyncio.to_thread(hub.ctl, "rollout", "undo", "app/svc")
            assert undone.returncode == 0, undone.stderr
            assert "rolled back to revision 2 (now revision 4)" in undone.stdout
            await until(lambda: reached(hub, 4, "Complete"), "the undo out")
            assert all(agent.running == 4 for agent in agents.values())
            history = await asyncio.to_thread(hub.ctl, "rollout", "history", "app/svc")
            assert [line.split()[0] for line in history.stdout.splitlines()[1:]] == [
                "1", "2", "3", "4",
            ]  # fmt: skip
            # Pause: a new revision moves nobody; resume: it goes out.
            paused = await asyncio.to_thread(hub.ctl, "rollout", "pause", "app/svc")
            assert paused.returncode == 0
            hub.apply(APP.format(command='"serve", "v5"', paused="true"))
            await until(lambda: reached(hub, 5, "Paused"), "paused")
            await asyncio.sleep(1.5)
            assert all(5 not in agent.seen for agent in agents.values())
            waiting = await asyncio.to_thread(status, "--no-watch")
            assert waiting.returncode == 2
            resumed = await asyncio.to_thread(hub.ctl, "rollout", "resume", "app/svc")
            assert resumed.returncode == 0
            await until(lambda: reached(hub, 5, "Complete"), "revision 5 out")
        finally:
            for agent in agents.values():
                await agent.stop()

    asyncio.run(scenario())
