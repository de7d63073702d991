"""A real JupyterHub started from deploy/jupyterhub_config.py, and students in Chromium.

The hub is the one a teacher starts with ``make hub``, the same file; the test only
says where (a folder of its own, a free port on this machine's non-loopback address)
and lets JupyterLab expose itself to the page for driving. Its proxy is npm's
configurable-http-proxy (``make`` installs it in deploy/node_modules). Each student
logs in through the hub's own login page in a headless Chromium of their own.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from wspatterns.runtime.processes import free_port

from . import browser_harness as harness

ROOT = Path(__file__).parent.parent
DEPLOY = ROOT / "deploy"
CONFIG = DEPLOY / "jupyterhub_config.py"
PROXY = DEPLOY / "node_modules" / ".bin" / "configurable-http-proxy"
INSTALL_PROXY = "make deploy/node_modules/.bin/configurable-http-proxy (needs npm)"


def outside_address() -> str | None:
    """This machine's first non-loopback IPv4 address, or None: where students come from."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # a route look-up: nothing is sent
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def command_of(process: psutil.Process) -> str:
    """A process's command line, or "" once it is gone (or a zombie)."""
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def outlived(processes: list[psutil.Process]) -> list[str]:
    """Those of ``processes`` still alive after a bounded wait, described; then killed."""
    _, alive = psutil.wait_procs(processes, timeout=harness.seconds(20))
    left = [f"{each.pid} {command_of(each)[:120]}" for each in alive]
    for each in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            each.kill()
    return left


@dataclass
class Hub:
    """A running hub: its address, its folders, and every process it started."""

    process: subprocess.Popen[bytes]
    url: str
    homes: Path
    log: Path
    seen: set[int] = field(default_factory=set)

    def processes(self) -> list[psutil.Process]:
        """The hub's processes now: proxy, students' servers, kernels and what they started."""
        try:
            found = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            found = []
        # Students' servers run in sessions of their own, but keep the hub as parent.
        self.seen |= {each.pid for each in found}
        return found

    def servers(self) -> dict[str, psutil.Process]:
        """Each student's single-user server, by name."""
        found = {}
        for each in self.processes():
            try:
                if "jupyterhub-singleuser" in command_of(each):
                    found[Path(each.cwd()).name] = each
            except psutil.Error:
                continue
        return found

    def proxy(self) -> psutil.Process | None:
        for each in self.processes():
            if "configurable-http-proxy" in command_of(each):
                return each
        return None

    def stop(self) -> list[str]:
        """Stop the hub (it stops the students' servers and its proxy); then make sure.

        Returns what was still alive after the hub's own shutdown, killed by us.
        """
        self.processes()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(harness.seconds(60))
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(harness.seconds(10))
        processes = []
        for pid in sorted(self.seen):
            with contextlib.suppress(psutil.NoSuchProcess):
                processes.append(psutil.Process(pid))
        return outlived(processes)

    def tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def start_hub(work: Path, lessons: Path, address: str) -> Hub:
    """Start the class hub of deploy/ in ``work``, serving ``address``; return once it answers."""
    port = free_port(address)
    homes = work / "homes"
    environ = {
        **os.environ,
        "WSPATTERNS_HUB_IP": address,
        "WSPATTERNS_HUB_PORT": str(port),
        "WSPATTERNS_HUB_HOMES": str(homes),
        "WSPATTERNS_HUB_LESSONS": str(lessons),
        "WSPATTERNS_HUB_STATE": str(work),
        # Whatever the tests' own environment says, students get the hub's defaults.
        "WSPATTERNS_BROWSER_ROUTE": "",
        "JUPYTER_CONFIG_DIR": str(work / "jupyter-config"),
    }
    allow_root = ["--allow-root"] if os.geteuid() == 0 else []
    # The one thing the test adds: JupyterLab lets the page drive it (window.jupyterapp).
    args = json.dumps([*allow_root, "--LabApp.expose_app_in_browser=True"])
    command = [str(harness.BIN / "jupyterhub"), "-f", str(CONFIG), f"--Spawner.args={args}"]
    log = work / "hub.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=work, env=environ, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    hub = Hub(process, f"http://{address}:{port}/", homes, log)

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the hub exited with {process.returncode}:\n{hub.tail()}")
        try:
            with urllib.request.urlopen(f"{hub.url}hub/login", timeout=5) as page:
                return page.status == 200
        except (urllib.error.URLError, OSError):
            return False

    try:
        harness.wait_for(answers, harness.seconds(90), "the hub answers its login page")
    except BaseException:
        hub.stop()
        raise
    return hub


START_RUN_ALL = """
const app = window.jupyterapp;
app.shell.activateById(window.wspatternsPanel.id);
app.commands.execute("notebook:run-all-cells");
"""

RUN_THROUGH = """
const [marker, done] = arguments;
const app = window.jupyterapp;
const panel = window.wspatternsPanel;
const cells = [...panel.content.model.cells];
const last = cells.findIndex((cell) => cell.type === "code"
  && cell.sharedModel.getSource().includes(marker));
if (last < 0) {
  done({ error: "no cell holds it" });
} else {
  app.shell.activateById(panel.id);
  // The saved outputs and counts go first, so that a cell that did not run shows.
  app.commands.execute("notebook:clear-all-cell-outputs")
    .then(() => {
      panel.content.activeCellIndex = last + 1;
      panel.content.deselectAll();
      return app.commands.execute("notebook:run-all-above");
    })
    .then((ok) => done({ ok, last }), (error) => done({ error: String(error) }));
}
"""

CONNECTED = """
const kernel = window.wspatternsPanel.sessionContext.session.kernel;
return kernel.connectionStatus === "connected" && kernel.status === "idle";
"""

KERNEL_ID = "return window.wspatternsPanel.sessionContext.session.kernel.id;"

RESTART = """
const [done] = arguments;
window.wspatternsPanel.sessionContext.session.kernel.restart().then(
  () => done({ ok: true }), (error) => done({ error: String(error) }));
"""

SHUT_DOWN = """
const [done] = arguments;
window.wspatternsPanel.sessionContext.shutdown().then(
  () => done({ ok: true }), (error) => done({ error: String(error) }));
"""

#: Chromium processes that outlived their ``quit()`` (and were killed): none, if all is well.
BROWSERS_LEFT: list[str] = []

LOGGED_IN = re.compile(r"/user/[^/]+/lab")


@dataclass
class Student:
    """One student: a name, a Chromium of their own, logged in to the hub."""

    name: str
    hub: Hub
    chrome: Any = None

    @property
    def base(self) -> str:
        return f"{self.hub.url}user/{self.name}/"

    def log_in(self) -> None:
        """Log in through the hub's login page, and wait for JupyterLab to open."""
        from selenium.webdriver.common.by import By

        if self.chrome is None:
            self.chrome = harness.start_chromium()
        chrome = self.chrome
        chrome.get(f"{self.hub.url}hub/login")
        chrome.find_element(By.ID, "username_input").send_keys(self.name)
        chrome.find_element(By.ID, "password_input").send_keys("any password")
        chrome.find_element(By.ID, "login_submit").click()
        harness.wait_for(
            lambda: LOGGED_IN.search(chrome.current_url), harness.seconds(180),
            f"{self.name}'s JupyterLab opens after logging in",
        )  # fmt: skip

    def open(self, path: str) -> str:
        """Open a lesson in this student's JupyterLab; returns its kernel's name."""
        return harness.open_at(self.chrome, f"{self.base}lab/tree/{path}?reset", path)

    def run_all(self) -> list[dict[str, Any]]:
        return harness.run_all(self.chrome)

    def execute(self, code: str) -> dict[str, Any]:
        return harness.execute(self.chrome, code)

    def start_run_all(self) -> None:
        """Press Run All and come back at once, without waiting for the cells."""
        self.chrome.execute_script(START_RUN_ALL)

    def run_through(self, marker: str) -> list[dict[str, Any]]:
        """Run the open notebook from the top through the first code cell holding ``marker``
        (a learner half-way through a lesson); returns those cells."""
        answer = self.chrome.execute_async_script(RUN_THROUGH, marker)
        if "error" in answer:
            raise RuntimeError(f"{self.name} running through {marker!r}: {answer['error']}")
        return list(self.chrome.execute_script(harness.CELLS))[: answer["last"] + 1]

    def run_cell(self, index: int) -> dict[str, Any]:
        return harness.run_cell(self.chrome, index)

    def kernel_connected(self) -> bool:
        """Whether the open notebook's page is connected to its kernel."""
        return bool(self.chrome.execute_script(CONNECTED))

    def kernel(self) -> psutil.Process:
        """The process of the open notebook's kernel."""
        kernel_id = self.chrome.execute_script(KERNEL_ID)
        server = self.hub.servers()[self.name]
        [kernel] = [each for each in server.children() if kernel_id in command_of(each)]
        return kernel

    def restart_kernel(self) -> None:
        """Restart the open notebook's kernel, as Kernel > Restart Kernel does."""
        answer = self.chrome.execute_async_script(RESTART)
        if "error" in answer:
            raise RuntimeError(f"restarting {self.name}'s kernel: {answer['error']}")

    def shut_down_kernel(self) -> None:
        """Shut down the open notebook's kernel, as Kernel > Shut Down Kernel does."""
        answer = self.chrome.execute_async_script(SHUT_DOWN)
        if "error" in answer:
            raise RuntimeError(f"shutting down {self.name}'s kernel: {answer['error']}")

    def quit(self) -> None:
        """Close this student's Chromium; any of its processes still alive after a bounded
        wait is killed and named in ``BROWSERS_LEFT``."""
        if self.chrome is None:
            return
        try:
            driver = psutil.Process(self.chrome.service.process.pid)
            tree = [driver, *driver.children(recursive=True)]
        except psutil.Error:
            tree = []
        self.chrome.quit()
        self.chrome = None
        BROWSERS_LEFT.extend(outlived(tree))
