"""JupyterLab started from the checkout, driven by headless Chromium: for tests that need a page.

Nothing here downloads a browser: Chromium and its driver come from the system
(Debian's ``chromium`` and ``chromium-driver``), found on PATH or in /usr/bin.
Every wait is bounded, by a number of seconds scaled with ``WSPATTERNS_TESTS_TIMEOUT_FACTOR``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

FACTOR = float(os.environ.get("WSPATTERNS_TESTS_TIMEOUT_FACTOR", "1"))
BIN = Path(sys.executable).parent
INSTALL = "sudo apt-get install chromium chromium-driver"


def seconds(value: float) -> float:
    return value * FACTOR


def chromium_paths() -> tuple[str, str] | None:
    """(chromium, chromedriver), or None when either is missing."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None
    )
    return (browser, driver) if browser and driver else None


def wait_for(condition, limit: float, what: str, step: float = 0.1):
    """Call ``condition()`` until it returns something true, for at most ``limit`` s; return it."""
    deadline = time.monotonic() + limit
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: still not the case after {limit:g} s")
        time.sleep(step)


@dataclass
class Lab:
    """A JupyterLab server of our own, on a free loopback port, serving ``root``."""

    root: Path
    process: subprocess.Popen[bytes]
    token: str
    runtime: Path
    log: Path
    port: int = 0
    route: str = "auto"  # the route its kernels are told to take
    seen: set[int] = field(default_factory=set)  # pids of its kernels, to be sure they end

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/lab/tree/{path}?reset&token={self.token}"

    def api(self, path: str, method: str = "GET") -> Any:
        request = urllib.request.Request(
            f"{self.base}api/{path}", method=method,
            headers={"Authorization": f"token {self.token}"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=seconds(10)) as answer:
            body = answer.read()
        return json.loads(body) if body else None

    def kernel_pids(self) -> set[int]:
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return set()
        self.seen |= {child.pid for child in children}
        return self.seen

    def stop(self) -> None:
        """Stop the server and every kernel it started, whatever state they are in."""
        self.kernel_pids()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(seconds(20))
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(seconds(10))
        for pid in self.seen:
            try:
                psutil.Process(pid).kill()
            except psutil.NoSuchProcess:
                pass

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def start_lab(
    root: Path,
    work: Path,
    env: dict[str, str] | None = None,
    as_make_lab: bool = False,
    settings: str | None = None,
    args: list[str] | None = None,
) -> Lab:
    """Start JupyterLab on ``root`` with the kit's kernel; returns once it answers.

    ``as_make_lab`` starts it as ``make lab`` does (index.ipynb first, JupyterLab's
    news left to the kit's settings) instead of quietening the news from the command line;
    ``settings`` is a folder to read JupyterLab's settings from instead of the kit's.
    """
    token = secrets.token_hex(16)
    runtime, config, data = work / "runtime", work / "config", work / "data"
    for folder in (runtime, config, data):
        folder.mkdir(parents=True, exist_ok=True)
    environ = {
        **os.environ,
        # Nothing of the user's own: settings, kernels and workspaces come from the checkout.
        "JUPYTER_RUNTIME_DIR": str(runtime),
        "JUPYTER_CONFIG_DIR": str(config),
        "JUPYTER_DATA_DIR": str(data),
        **(env or {}),
    }
    command = [
        str(BIN / "jupyter"), "lab", "--no-browser", "--port=0", "--ip=127.0.0.1",
        f"--IdentityProvider.token={token}", f"--notebook-dir={root}",
        "--expose-app-in-browser", "--ServerApp.open_browser=False",
        "--ServerApp.local_hostnames=['localhost','jupyter.test']",
    ]  # fmt: skip
    if as_make_lab:
        command.append("--LabApp.default_url=/lab/tree/index.ipynb")
    else:
        command.append("--LabApp.news_url=None")
    if settings is not None:
        command.append(f"--LabApp.app_settings_dir={settings}")
    if os.geteuid() == 0:
        command.append("--allow-root")
    command += args or []
    log = work / "lab.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=root, env=environ, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    lab = Lab(root, process, token, runtime, log)
    try:

        def port() -> int | None:
            if process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {process.returncode}:\n{lab.tail()}")
            for info in runtime.glob("jpserver-*.json"):
                try:
                    return int(json.loads(info.read_text())["port"])
                except (ValueError, KeyError):
                    return None
            return None

        lab.port = wait_for(port, seconds(60), "JupyterLab writes its port")

        def answers() -> bool:
            try:
                return "started" in lab.api("status")
            except (urllib.error.URLError, OSError):
                return False

        wait_for(answers, seconds(60), "JupyterLab answers")
    except BaseException:
        lab.stop()
        raise
    return lab


def start_chromium(window: str = "1280,1600", host_rules: str | None = None) -> Any:
    """Headless Chromium under Selenium, with its console kept for reading."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    paths = chromium_paths()
    if paths is None:
        raise RuntimeError(f"Chromium or chromedriver is missing: {INSTALL}")
    browser, driver = paths
    options = Options()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 f"--window-size={window}", "--disable-gpu"):  # fmt: skip
        options.add_argument(flag)
    if host_rules:
        options.add_argument(f"--host-resolver-rules={host_rules}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never fetch a browser
    chrome = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    chrome.set_script_timeout(seconds(600))
    # Selenium's own wait for an answer from the driver (120 s by default) must outlast a
    # script that waits for a whole lesson.
    chrome.command_executor.client_config.timeout = seconds(660)
    chrome.set_page_load_timeout(seconds(120))
    return chrome


# What runs in the page. JupyterLab exposes itself as window.jupyterapp (--expose-app-in-browser).

CLEAN = "window.wspatternsPanel && (window.wspatternsPanel.context.model.dirty = false);"

# Inside an async function with ``limit`` (seconds) in scope: wait for JupyterLab to be
# restored, leaving ``deadline``, ``pause`` and ``app`` for what follows.
STARTED = """
  const deadline = Date.now() + limit * 1000;
  const pause = () => new Promise((resolve) => setTimeout(resolve, 100));
  while (!window.jupyterapp) {
    if (Date.now() > deadline) throw new Error("JupyterLab did not start");
    await pause();
  }
  const app = window.jupyterapp;
  await app.started;
  await app.restored;
"""

OPENED = """
const [path, limit, done] = arguments;
(async () => {""" + STARTED + """
  const panel = await app.commands.execute("docmanager:open", { path, factory: "Notebook" });
  app.shell.activateById(panel.id);
  window.wspatternsPanel = panel;
  await panel.context.ready;
  await panel.sessionContext.ready;
  while (!(panel.sessionContext.session && panel.sessionContext.session.kernel
           && panel.sessionContext.session.kernel.status === "idle")) {
    if (Date.now() > deadline) throw new Error("the kernel did not become idle");
    await pause();
  }
  return panel.sessionContext.session.kernel.name;
})().then((kernel) => done({ kernel }), (error) => done({ error: String(error) }));
"""

RUN_ALL = """
const [done] = arguments;
const app = window.jupyterapp;
app.shell.activateById(window.wspatternsPanel.id);
app.commands.execute("notebook:run-all-cells").then(
  (ok) => done({ ok }), (error) => done({ error: String(error) }));
"""

CELLS = """
const panel = window.wspatternsPanel;
const cells = [];
for (const cell of panel.content.model.cells) {
  cells.push({
    type: cell.type,
    source: cell.sharedModel.getSource(),
    execution_count: cell.type === "code" ? cell.executionCount : null,
    outputs: cell.type === "code" ? cell.outputs.toJSON() : [],
  });
}
return cells;
"""


def open_notebook(chrome: Any, lab: Lab, path: str, host: str = "127.0.0.1") -> str:
    """Open ``path`` in JupyterLab and wait for its kernel; returns the kernel's name."""
    try:
        return open_at(chrome, lab.url(path, host), path)
    except RuntimeError as failed:
        raise RuntimeError(f"{failed}\n{lab.tail()}") from None


def open_at(chrome: Any, url: str, path: str) -> str:
    """Load JupyterLab at ``url``, open the notebook ``path`` and wait for its kernel."""
    chrome.execute_script(CLEAN)  # leaving a notebook with outputs: no "leave the page?"
    chrome.get(url)
    answer = chrome.execute_async_script(OPENED, path, seconds(120))
    if "error" in answer:
        raise RuntimeError(f"opening {path}: {answer['error']}")
    return str(answer["kernel"])


def run_all(chrome: Any) -> list[dict[str, Any]]:
    """Run every cell of the open notebook, as Run > Run All Cells does; return the cells."""
    answer = chrome.execute_async_script(RUN_ALL)
    if "error" in answer:
        raise RuntimeError(f"running all cells: {answer['error']}")
    return list(chrome.execute_script(CELLS))


def errors_in(cells: list[dict[str, Any]]) -> list[str]:
    """Each error output and each code cell left unrun, described in a line or a few."""
    found = []
    for number, cell in enumerate(cells):
        if cell["type"] != "code":
            continue
        for output in cell["outputs"]:
            if output.get("output_type") == "error":
                trace = "\n".join(output.get("traceback", []))[-2000:]
                found.append(f"cell {number} raised {output['ename']}: {output['evalue']}\n{trace}")
        if cell["execution_count"] is None and cell["source"].strip():
            found.append(f"cell {number} did not run: {cell['source'][:80]!r}")
    return found


def text_of(cell: dict[str, Any]) -> str:
    """What a cell printed on stdout, and the text/plain of its result, joined."""
    parts = []
    for output in cell["outputs"]:
        if output.get("output_type") == "stream" and output.get("name") == "stdout":
            text = output["text"]
            parts.append(text if isinstance(text, str) else "".join(text))
        elif output.get("output_type") == "execute_result" and "text/plain" in output["data"]:
            text = output["data"]["text/plain"]
            parts.append(text if isinstance(text, str) else "".join(text))
    return "".join(parts)


def console_errors(chrome: Any) -> list[str]:
    """Errors logged in the page's console since the last call."""
    return [entry["message"] for entry in chrome.get_log("browser") if entry["level"] == "SEVERE"]


# The chat page of lessons 06 and 06b (notebooks/chat/chat.html) connects again, with its
# own backoff, whenever its connection ends: when its program is killed in 06b's crash
# story, or stopped while a tab just closed is still unloading. Chromium logs each attempt
# that finds nothing listening, whatever the page does: that is the page's behaviour the
# lesson shows, not an error of the kit's.
CHAT_PAGE_RETRY = re.compile(r"WebSocket connection to 'wss?://[^']*/lobby\?[^']*' failed: $")


def lesson_console_errors(chrome: Any) -> list[str]:
    """:func:`console_errors` but a chat page's failed attempts to connect again."""
    return [line for line in console_errors(chrome) if not is_chat_page_retry(line)]


def is_chat_page_retry(line: str) -> bool:
    return CHAT_PAGE_RETRY.search(line) is not None


def write_notebook(path: Path, cells: list[str]) -> None:
    """A notebook on the kit's kernel, one code cell per string."""
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {
        "name": "wspatterns", "display_name": "Python (wspatterns)", "language": "python",
    }  # fmt: skip
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nbformat.write(notebook, path)


RUN_CELL = """
const [index, done] = arguments;
const app = window.jupyterapp;
const panel = window.wspatternsPanel;
app.shell.activateById(panel.id);
panel.content.activeCellIndex = index;
panel.content.deselectAll();
app.commands.execute("notebook:run-cell").then(
  (ok) => done({ ok }), (error) => done({ error: String(error) }));
"""

EXECUTE = """
const [code, done] = arguments;
const kernel = window.wspatternsPanel.sessionContext.session.kernel;
const future = kernel.requestExecute({ code, store_history: false });
const seen = { stdout: "", stderr: "", error: null };
future.onIOPub = (message) => {
  const type = message.header.msg_type;
  if (type === "stream") seen[message.content.name] += message.content.text;
  if (type === "error") seen.error = message.content.ename + ": " + message.content.evalue;
};
future.done.then(() => done(seen), (error) => done({ ...seen, error: String(error) }));
"""


def run_cell(chrome: Any, index: int) -> dict[str, Any]:
    """Run the code cell at ``index`` of the open notebook, as Shift+Enter does; return it."""
    answer = chrome.execute_async_script(RUN_CELL, index)
    if "error" in answer:
        raise RuntimeError(f"running cell {index}: {answer['error']}")
    return dict(chrome.execute_script(CELLS)[index])


def execute(chrome: Any, code: str) -> dict[str, Any]:
    """Run ``code`` in the open notebook's kernel, outside its cells; what it printed or raised."""
    return dict(chrome.execute_async_script(EXECUTE, code))


CLIENTS = """
const clients = globalThis.__wspatterns_browser_clients__ || new Map();
const all = [...clients.values()];
return {
  models: all.length,
  open: all.filter((c) => c.socket && c.socket.readyState === WebSocket.OPEN)
    .map((c) => c.model.get("name")),
};
"""


def page_clients(chrome: Any) -> dict[str, Any]:
    """The browser clients this page holds: how many models, and the names of the open ones."""
    return dict(chrome.execute_script(CLIENTS))


def reload_page(chrome: Any) -> None:
    """Reload the page, as F5 does (the notebook marked saved, so no dialog asks first)."""
    chrome.execute_script(CLEAN)
    chrome.refresh()


def close_tab(chrome: Any, before: str = "") -> None:
    """Close the current tab (after running the script ``before`` in it) and go on in a new one."""
    closing = chrome.current_window_handle
    chrome.switch_to.new_window("tab")
    opened = chrome.current_window_handle
    chrome.switch_to.window(closing)
    chrome.execute_script(CLEAN + before)
    chrome.close()  # right away: what ``before`` started may still be under way
    chrome.switch_to.window(opened)


def shutdown_kernels(lab: Lab) -> None:
    """End every notebook session (and its kernel) of ``lab``: the next notebook starts afresh."""
    for session in lab.api("sessions"):
        lab.api(f"sessions/{session['id']}", "DELETE")


CELL_OF = """
const panel = window.wspatternsPanel;
const cellOf = (node) => panel.content.widgets.findIndex((cell) => cell.node.contains(node));
return arguments[0].map(cellOf);
"""


def pictures_of_clients(chrome: Any) -> dict[int, bytes]:
    """A PNG of each browser client drawn in the open notebook, by the index of its cell."""
    from selenium.webdriver.common.by import By

    drawn = chrome.find_elements(By.CSS_SELECTOR, ".wsp-browser")
    pictures = {}
    for cell, widget in zip(chrome.execute_script(CELL_OF, drawn), drawn, strict=True):
        chrome.execute_script("arguments[0].scrollIntoView({block: 'center'});", widget)
        pictures[cell] = widget.screenshot_as_png
    return pictures


def screenshot_widgets(chrome: Any, folder: Path, prefix: str) -> list[Path]:
    """A PNG of each browser client drawn in the page (scrolled into view first)."""
    from selenium.webdriver.common.by import By

    folder.mkdir(parents=True, exist_ok=True)
    saved = []
    for number, widget in enumerate(chrome.find_elements(By.CSS_SELECTOR, ".wsp-browser")):
        chrome.execute_script("arguments[0].scrollIntoView({block: 'center'});", widget)
        path = folder / f"{prefix}-{number:02d}.png"
        widget.screenshot(str(path))
        saved.append(path)
    return saved
