"""The first minutes of a newcomer, in real Chromium: `make lab`, then every lesson opened.

`make lab` starts JupyterLab on the lessons with index.ipynb first. What a newcomer
must see there: the kit's kernel, chosen without a question, for the lessons and for
a notebook of their own; no question about JupyterLab's news; and lessons that open
unchanged, so that closing one never asks whether to save what they did not touch.
These come from `python -m wspatterns setup` (run by `make`), which writes the kit's
settings into the `.venv`, not from anything the test passes JupyterLab.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from . import browser_harness as harness
from .test_browser import needs_chromium

LESSONS = Path(__file__).parent.parent / "notebooks"

# The page as it stands once JupyterLab has opened what it was asked to open first.
FIRST_PAGE = """
const [limit, done] = arguments;
(async () => {""" + harness.STARTED + """
  let panel = app.shell.currentWidget;
  while (!(panel && panel.context)) {
    if (Date.now() > deadline) throw new Error("JupyterLab opened no notebook first");
    await pause();
    panel = app.shell.currentWidget;
  }
  await panel.context.ready;
  return panel.context.path;
})().then((path) => done({ path }), (error) => done({ error: String(error) }));
"""

# Open a notebook as a learner does (``null``: a new one), look at every cell, say what is seen.
LOOK = """
const [path, limit, done] = arguments;
const app = window.jupyterapp;
const pause = () => new Promise((resolve) => setTimeout(resolve, 100));
const frame = () => new Promise((resolve) => requestAnimationFrame(() => resolve()));

// A new notebook asks for its kernel, offering the default first: say which, and take it.
async function offered(deadline) {
  let dialog = null;
  while (!(dialog = document.querySelector(".jp-Dialog select"))) {
    if (Date.now() > deadline) throw new Error("a new notebook asked for no kernel");
    await pause();
  }
  const choice = dialog.options[dialog.selectedIndex].textContent;
  document.querySelector(".jp-Dialog .jp-mod-accept").click();
  return choice;
}

async function settled(panel, deadline) {
  await panel.context.ready;
  const asked = panel.context.path.startsWith("Untitled") ? await offered(deadline) : null;
  await panel.sessionContext.ready;
  const idle = () => panel.sessionContext.session && panel.sessionContext.session.kernel
    && panel.sessionContext.session.kernel.status === "idle";
  while (!idle()) {
    if (Date.now() > deadline) throw new Error(panel.context.path + ": no kernel became idle");
    await pause();
  }
  // Lessons are drawn lazily, cell by cell as they scroll in: scroll through every cell
  // until each code cell shows all its saved outputs, as a learner reading to the end.
  const notebook = panel.content;
  const drawn = () => notebook.widgets.every((cell) => cell.model.type !== "code"
    || (cell.outputArea && cell.outputArea.widgets.length === cell.model.outputs.length));
  for (let index = 0; index < notebook.widgets.length; index++) {
    await notebook.scrollToItem(index);
    await frame();
  }
  while (!drawn()) {
    if (Date.now() > deadline) throw new Error(panel.context.path + ": outputs never drawn");
    await pause();
  }
  await frame();
  await frame();
  return {
    path: panel.context.path,
    offered: asked,
    kernel: panel.sessionContext.session.kernel.name,
    dirty: panel.context.model.dirty,
  };
}

(async () => {
  const deadline = Date.now() + limit * 1000;
  const panel = path === null
    ? await app.commands.execute("notebook:create-new", { cwd: "" })
    : await app.commands.execute("docmanager:open", { path, factory: "Notebook" });
  app.shell.activateById(panel.id);
  const seen = await settled(panel, deadline);
  // Left open, as a learner leaves tabs: closing one at once would cancel JupyterLab's
  // debugger while it asks the new kernel for its state, an error no learner causes.
  return seen;
})().then((answer) => done(answer), (error) => done({ error: String(error) }));
"""


TOASTS = 'return [...document.querySelectorAll(".Toastify__toast")].map((t) => t.textContent);'

# Wait for JupyterLab's question about its news, for at most ``limit`` seconds.
NEWS = """
const [limit, done] = arguments;
(async () => {
  const deadline = Date.now() + limit * 1000;
  const asked = () => [...document.querySelectorAll(".Toastify__toast")]
    .map((t) => t.textContent).filter((text) => text.toLowerCase().includes("news"));
  while (asked().length === 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return { toasts: asked() };
})().then((answer) => done(answer), (error) => done({ error: String(error) }));
"""


def first_open(tmp_path: Path, settings: str | None = None, look: bool = True) -> dict:
    """Start JupyterLab as `make lab` does on a copy of the lessons, and look at each one.

    ``settings`` replaces the folder JupyterLab reads the kit's settings from, to see
    what a JupyterLab without them would show.
    """
    root = tmp_path / "notebooks"
    shutil.copytree(LESSONS, root)
    lab = harness.start_lab(root, tmp_path / "lab", as_make_lab=True, settings=settings)
    chrome = None
    try:
        chrome = harness.start_chromium()
        chrome.get(f"{lab.base}?token={lab.token}")
        first = chrome.execute_async_script(FIRST_PAGE, harness.seconds(120))
        assert "error" not in first, (first, lab.tail())
        if look:
            answer = {"seen": []}
            for path in [*sorted(path.name for path in root.glob("*.ipynb")), None]:
                seen = chrome.execute_async_script(LOOK, path, harness.seconds(100))
                assert "error" not in seen, (seen, lab.tail())
                answer["seen"].append(seen)
            answer["toasts"] = chrome.execute_script(TOASTS)
        else:
            answer = chrome.execute_async_script(NEWS, harness.seconds(60))
        assert "error" not in answer, (answer, lab.tail())
        answer["first"] = first["path"]
        answer["console"] = harness.console_errors(chrome)
        return answer
    finally:
        if chrome is not None:
            chrome.quit()
        lab.stop()


@pytest.mark.timeout(900)
def test_a_newcomer_s_first_open(tmp_path):
    needs_chromium()
    answer = first_open(tmp_path)
    assert answer["first"] == "index.ipynb"
    seen = {each["path"]: each for each in answer["seen"]}
    lessons = sorted(path.name for path in LESSONS.glob("*.ipynb"))
    assert set(lessons) < set(seen)  # every lesson, and the notebook of one's own
    assert {each["kernel"] for each in answer["seen"]} == {"wspatterns"}
    [new] = [each for each in answer["seen"] if each["path"].startswith("Untitled")]
    assert new["offered"] == "Python (wspatterns)"
    assert [path for path in lessons if seen[path]["dirty"]] == []
    assert [toast for toast in answer["toasts"] if "news" in toast.lower()] == []
    assert answer["console"] == []


@pytest.mark.timeout(600)
def test_without_the_kit_s_settings_jupyterlab_asks_about_its_news(tmp_path):
    """The check above can fail: JupyterLab left to itself asks about its news at once."""
    needs_chromium()
    empty = tmp_path / "no-settings"
    empty.mkdir()
    answer = first_open(tmp_path, settings=str(empty), look=False)
    assert [toast for toast in answer["toasts"] if "news" in toast.lower()] != []
