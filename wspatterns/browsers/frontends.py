"""Is there a page to draw a browser client in? Known before anything waits on one.

A browser client lives in a notebook's page, so it needs a front end that draws
widgets: JupyterLab, Notebook 7 or VS Code. A kernel cannot ask its front end,
but it can tell how it was started: a Jupyter server names the notebook of the
kernels it starts in ``JPY_SESSION_NAME``, and VS Code leaves ``VSCODE_``
variables and ``__vsc_ipynb_file__``. Plain Python, IPython in a terminal, and
kernels that nbval, nbconvert or papermill start to run a notebook by
themselves have none of these, and no page: saying so at once beats waiting.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..reports import ipython


def missing_front_end(environ: Mapping[str, str] | None = None) -> str | None:
    """Why no page can draw a browser client here, in a few words; None if one can."""
    shell = ipython()
    if shell is None:
        return "this is plain Python, with no notebook page"
    if getattr(shell, "kernel", None) is None:
        return "this is IPython in a terminal, with no notebook page"
    environ = os.environ if environ is None else environ
    if environ.get("JPY_SESSION_NAME") or "__vsc_ipynb_file__" in shell.user_ns:
        return None
    if any(key.startswith("VSCODE_") for key in environ):
        return None
    return (
        "this kernel was not started by JupyterLab, Jupyter Notebook or VS Code "
        "(nbval, nbconvert and papermill run notebooks without drawing them)"
    )
