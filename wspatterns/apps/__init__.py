"""Applications: your own program, run as a plain websockets process, and the tabs that use it.

* :mod:`~wspatterns.apps.launcher` — ``chat = await start_app("chat_server.py")``:
  the program in a process of its own, stopped with SIGTERM (``await chat.stop()``)
  or killed (``await chat.crash()``); its flow merged with the notebook's
  (``await chat.flow()``, ``await flow_of(chat_1, chat_2)``);
* :mod:`~wspatterns.apps.output` — what the kit keeps of what the program prints
  (``chat.output``, ``chat.reports``) and shows under the cells: bounded, however much
  it prints;
* :mod:`~wspatterns.apps.recording` — ``**recorded()``, the one argument a program
  adds to websockets' ``serve()`` for the kit to see its connections (nothing when run
  by hand);
* :mod:`~wspatterns.apps.tab` — ``browser_tab(chat, "/?name=dana")``: the page the
  program serves, in a frame under the cell, as a browser tab shows it.
"""

from __future__ import annotations

from typing import Any

from ..runtime.processes import free_port
from .launcher import App, flow_of, start_app
from .recording import recorded


def __getattr__(name: str) -> Any:
    # The tab is a widget: anywidget is imported only by whoever shows one, not by a program.
    if name in ("browser_tab", "BrowserTab"):
        from . import tab

        return getattr(tab, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "App",
    "BrowserTab",
    "browser_tab",
    "flow_of",
    "free_port",
    "recorded",
    "start_app",
]
