"""What the kit sets in the JupyterLab of the environment it is installed in, and nowhere else.

``python -m wspatterns setup`` (``make`` runs it) installs the kernel the lessons
use, **Python (wspatterns)**, makes it the server's default, and answers JupyterLab's
"fetch official Jupyter news?" question with no, so nothing pops up over a lesson.
Everything goes under ``sys.prefix`` (the ``.venv``, or the conda environment):
a learner's own Jupyter settings in their home are not touched.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

KERNEL = "wspatterns"
DISPLAY_NAME = "Python (wspatterns)"

#: JupyterLab settings for this environment only (read from share/jupyter/lab/settings).
OVERRIDES = {
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False}
}

#: Jupyter server settings for this environment only (etc/jupyter/jupyter_server_config.json;
#: the .d folder beside it is read for enabling extensions only).
SERVER = {"MultiKernelManager": {"default_kernel_name": KERNEL}}


def setup(prefix: str | None = None) -> list[Path]:
    """Install the kernel and write the settings under ``prefix`` (``sys.prefix``).

    Returns the files written. Raises CalledProcessError if the kernel cannot be installed.
    """
    root = Path(prefix or sys.prefix)
    subprocess.run(
        [sys.executable, "-m", "ipykernel", "install", "--prefix", str(root),
         "--name", KERNEL, "--display-name", DISPLAY_NAME],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    written = [
        _write(root / "share" / "jupyter" / "lab" / "settings" / "overrides.json", OVERRIDES),
        _write(root / "etc" / "jupyter" / "jupyter_server_config.json", SERVER),
    ]
    return written


def _write(path: Path, settings: Mapping[str, object]) -> Path:
    """Merge ``settings`` into the JSON file at ``path`` (kept: what others put there)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    current: dict[str, object] = {}
    if path.exists():
        current = json.loads(path.read_text() or "{}")
    for key, value in settings.items():
        section = current.get(key)
        if isinstance(section, dict) and isinstance(value, dict):
            current[key] = {**section, **value}
        else:
            current[key] = value
    path.write_text(json.dumps(current, indent=2) + "\n")
    return path
