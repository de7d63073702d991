"""Small helpers shared by the tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

from wspatterns.waiting import wait_until

# One unit of time for the tests, scaled for slow machines (upstream websockets does the same).
MS = 0.001 * float(os.environ.get("WSPATTERNS_TESTS_TIMEOUT_FACTOR", "1"))

#: How long a test waits for something that should happen soon before calling it a failure.
#: Generous: it costs time only when the code is broken, and a busy machine is slow.
BOUND = 5_000 * MS


async def eventually(condition, what: str = "", timeout: float = BOUND) -> None:
    """Wait until ``condition()`` holds, checking every few milliseconds; fail the test,
    saying ``what`` was awaited, if it still does not after ``timeout`` seconds."""
    try:
        await wait_until(condition, timeout)
    except TimeoutError as exc:
        raise AssertionError(f"waited {timeout:g} s for {what}" if what else str(exc)) from None


async def ended(flow) -> None:
    """Wait until every end of every connection in ``flow`` has recorded the end of its
    connection (each end records it when its TCP connection is gone)."""
    await eventually(
        lambda: sum(event.kind == "end" for event in flow.events) == len(flow.totals),
        "every end of every connection to record its end",
    )


async def echo(websocket):
    async for message in websocket:
        await websocket.send(message)


def listening_ports() -> set[int]:
    """TCP ports this process is listening on right now."""
    return {
        conn.laddr.port
        for conn in psutil.Process().net_connections(kind="tcp")
        if conn.status == psutil.CONN_LISTEN
    }


def open_tcp_connections() -> int:
    return sum(
        1
        for conn in psutil.Process().net_connections(kind="tcp")
        if conn.status == psutil.CONN_ESTABLISHED
    )


def run_python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter, as a learner's script would run."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def crashed_server(error: Exception):
    """A kit server whose handler raised ``error`` on the first message one client sent it."""
    from websockets.exceptions import ConnectionClosedError

    from wspatterns import connect, serve

    async def broken(websocket):
        await websocket.recv()
        raise error

    server = await serve(broken)
    async with connect(server) as websocket:
        await websocket.send("boom")
        try:
            await websocket.recv()
        except ConnectionClosedError:
            return server
    raise AssertionError("the handler should have failed and closed the connection")


def execute(client, code: str) -> dict[str, str]:
    """Run one cell; return what it printed, by stream name."""
    streams = {"stdout": "", "stderr": ""}

    def collect(message):
        if message["msg_type"] == "stream":
            streams[message["content"]["name"]] += message["content"]["text"]

    reply = client.execute_interactive(textwrap.dedent(code), output_hook=collect, timeout=60)
    assert reply["content"]["status"] == "ok", reply["content"]
    return streams


def every_view(flow):
    """Draw ``flow`` in every way the kit can, checking that the views agree on what it holds:
    for a flow that something odd went into, where a view could raise. Returns the diagram."""
    import xml.etree.ElementTree as ElementTree

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    from wspatterns.flow import Broadcast

    diagram = flow.sequence()
    ElementTree.fromstring(diagram.svg)
    assert diagram.mermaid.startswith("sequenceDiagram") and diagram.text
    assert len(flow.table()) == len(flow) == len(flow.events)
    folded = sum(len(entry) - 1 for entry in flow.entries if isinstance(entry, Broadcast))
    assert len(flow.table(per="broadcast")) == len(flow) - folded
    connections = {end.who.connection for end in flow.totals}
    assert set(flow.stats().index) == connections
    pyplot.close(flow.timeline())
    assert f"on {len(connections)} connection" in repr(flow.live())
    return diagram


def kernel_manager(folder: Path) -> KernelManager:
    """A kernel manager, not started, for an ipykernel of this Python (the checkout's
    .venv), described in a kernel spec written under ``folder``."""
    spec = folder / "kernels" / "here"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "language": "python"}))
    return KernelManager(
        kernel_name="here", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec.parent)])
    )
