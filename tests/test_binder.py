"""What mybinder.org builds from binder/, and what a Binder user gets from it.

repo2docker (what mybinder.org builds with) reads binder/environment.yml, installs it,
then runs binder/postBuild from the repository's root. The first tests keep that file in
step with ../environment.yml and pyproject.toml; the others run the real postBuild in a
fresh environment, with nothing of anyone's Jupyter settings in reach, and look at what a
Binder user opens: the lessons' kernel, the server's default kernel, JupyterLab's news.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import yaml
from packaging.specifiers import SpecifierSet

from .test_environment import NOT_PACKAGES, requirements
from .utils import BOUND

ROOT = Path(__file__).parent.parent
BINDER = ROOT / "binder"
POSTBUILD = BINDER / "postBuild"

#: How repo2docker finds the Python to build in an environment.yml (its conda buildpack's
#: PYTHON_REGEX): only `python=X.Y` names one; anything else builds its default Python.
REPO2DOCKER_PYTHON = re.compile(r"python\s*=+\s*([\d\.]*)")

#: Not pip's packages, and needed on Binder: pip for the pip section, the Redis of lesson 05.
NEEDED = {"pip", "redis-server"}

#: A subprocess that should end in a few seconds; generous, it costs time only when broken.
SLOW = 12 * BOUND


def environment(path: Path) -> dict[str, list[str]]:
    """An environment.yml's channels, conda lines and pip lines (each without comments)."""
    spec = yaml.safe_load(path.read_text())
    conda = [entry for entry in spec["dependencies"] if isinstance(entry, str)]
    blocks = [entry["pip"] for entry in spec["dependencies"] if isinstance(entry, dict)]
    pip = [line for block in blocks for line in block]
    return {"channels": spec["channels"], "conda": conda, "pip": pip}


def drift(binder: dict[str, list[str]], root: dict[str, list[str]], project: dict) -> list[str]:
    """How ``binder`` (from binder/environment.yml) strays from ``root`` (../environment.yml)
    and ``project`` (pyproject.toml's [project]); empty when they agree."""
    problems = []
    if binder["channels"] != root["channels"]:
        problems.append(f"channels {binder['channels']} here, {root['channels']} at the root")
    pins = [line for line in binder["conda"] if requirements([line]).keys() == {"python"}]
    found = [REPO2DOCKER_PYTHON.match(pin) for pin in pins]
    if len(pins) != 1 or not found[0] or found[0].group(1).count(".") != 1:
        problems.append(f"Python is not pinned as python=X.Y, which repo2docker reads: {pins}")
    elif found[0].group(1) not in SpecifierSet(project["requires-python"]):
        problems.append(f"{pins[0]} is not what the kit requires: {project['requires-python']}")
    editable = [line for line in binder["pip"] if line.startswith("-e")]
    if [(BINDER / line.split()[1]).resolve() for line in editable] != [ROOT.resolve()]:
        problems.append(f"the kit is not installed once from the repository's root: {editable}")
    for section in ("conda", "pip"):
        ours = requirements([line for line in binder[section] if not line.startswith("-")])
        theirs = requirements([line for line in root[section] if not line.startswith("-")])
        for name, spec in ours.items():
            if name != "python" and theirs.get(name) != spec:
                where = "missing" if name not in theirs else f"{name}{theirs[name]}"
                problems.append(f"{name}{spec} in {section}: at the root, {where}")
    for name in sorted(NEEDED - requirements(binder["conda"]).keys()):
        problems.append(f"{name} is missing here")
    listed = requirements([line for line in binder["conda"] + binder["pip"] if line[0] != "-"])
    for name in NOT_PACKAGES:
        listed.pop(name, None)
    wanted = requirements(project["dependencies"])
    for name in sorted(wanted.keys() - listed.keys()):
        problems.append(f"{name}{wanted[name]} is a dependency of the kit, missing here")
    for name in sorted(listed.keys() - wanted.keys()):
        problems.append(f"{name} is not a dependency of the kit (the developers' tools stay out)")
    return problems


def read_all() -> tuple[dict, dict, dict]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return environment(BINDER / "environment.yml"), environment(ROOT / "environment.yml"), project


def test_binder_environment_keeps_in_step_with_environment_yml_and_pyproject():
    assert drift(*read_all()) == []


def test_the_drift_check_sees_each_way_of_straying():
    binder, root, project = read_all()

    def strayed(section: str, name: str, line: str | None) -> list[str]:
        """drift() once ``name``'s line in ``section`` is ``line`` (None: gone; new: added)."""
        lines = [other for other in binder[section] if not other.startswith(name)]
        lines += [line] if line else []
        return drift({**binder, section: lines}, root, project)

    assert drift({**binder, "channels": ["defaults"]}, root, project)
    assert "Python is not pinned" in strayed("conda", "python", "python>=3.11")[0]
    assert "not what the kit requires" in strayed("conda", "python", "python=3.10")[0]
    assert "not installed once" in strayed("pip", "-e", "-e .")[0]
    assert strayed("conda", "websockets", "websockets>=16") == [
        "websockets>=16 in conda: at the root, websockets>=17,<18"
    ]
    assert strayed("conda", "psutil", None) == [
        "psutil>=5.9 is a dependency of the kit, missing here"
    ]
    assert strayed("conda", "redis-server", None) == ["redis-server is missing here"]
    assert "developers' tools" in strayed("conda", "selenium", "selenium>=4.11")[-1]


def test_postbuild_is_a_bash_script_that_stops_at_its_first_error():
    # repo2docker runs it as ./binder/postBuild, and goes on after a failed line unless told.
    lines = POSTBUILD.read_text().splitlines()
    assert lines[0] == "#!/bin/bash"
    assert any(line.startswith("set -e") for line in lines)
    assert os.access(POSTBUILD, os.X_OK)


# What a Binder user gets: the environment postBuild ran in, seen as Jupyter sees it.


def fresh_environment(folder: Path) -> dict[str, str]:
    """Make a new Python environment in ``folder`` (nothing of Jupyter's set up in it) and
    return the variables to run its programs with: its bin first on PATH, and a home of its
    own, so nothing of the user's Jupyter settings is read. It imports the kit and its
    dependencies from this environment's site-packages, as binder/environment.yml installs
    them on Binder, so nothing is downloaded."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=SLOW
    )
    ours = sysconfig.get_paths()["purelib"]
    theirs = sysconfig.get_paths(vars={"base": str(folder), "platbase": str(folder)})["purelib"]
    Path(theirs, "kit_and_dependencies.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    # Installing JupyterLab makes this folder; without it, JupyterLab would read its settings
    # from the environment it was imported from.
    (folder / "share" / "jupyter" / "lab").mkdir(parents=True)
    home = folder / "home"
    data = home / ".local" / "share" / "jupyter"
    return {
        "PATH": os.pathsep.join([str(folder / "bin"), "/usr/bin", "/bin"]),
        "HOME": str(home),
        "JUPYTER_CONFIG_DIR": str(home / ".jupyter"),
        "JUPYTER_DATA_DIR": str(data),
        "JUPYTER_RUNTIME_DIR": str(data / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / ".jupyter" / "lab" / "user-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / ".jupyter" / "lab" / "workspaces"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
    }


def run(command: list[str], variables: dict[str, str]) -> str:
    """What ``command`` prints, run from the repository's root as repo2docker runs postBuild."""
    done = subprocess.run(
        command, env=variables, cwd=ROOT, capture_output=True, text=True, timeout=SLOW
    )
    assert done.returncode == 0, f"{command} failed:\n{done.stderr}"
    return done.stdout


def what_binder_gives(folder: Path, variables: dict[str, str]) -> list[str]:
    """What is wrong, for a Binder user, with the environment in ``folder``: the kernel the
    lessons ask for, the server's default kernel, JupyterLab's news question. Each is read
    the way Jupyter reads it, by that environment's own Python. Empty when all is right."""
    problems = []
    listing = run(["python", "-m", "jupyter_client.kernelspecapp", "list", "--json"], variables)
    kernels = json.loads(listing)["kernelspecs"]
    if "wspatterns" not in kernels:
        problems.append(f"no wspatterns kernel; the kernels are {sorted(kernels)}")
    else:
        python = kernels["wspatterns"]["spec"]["argv"][0]
        prefix = run([python, "-c", "import sys; print(sys.prefix)"], variables).strip()
        if Path(prefix).resolve() != folder.resolve():
            problems.append(f"the wspatterns kernel runs {python}, of {prefix}, not of {folder}")
    server = json.loads(run(["python", "-m", "jupyter_server", "--show-config-json"], variables))
    default = server.get("MultiKernelManager", {}).get("default_kernel_name")
    if default != "wspatterns":
        problems.append(f"the server's default kernel is {default!r}, not 'wspatterns'")
    where = "from jupyterlab.labapp import LabApp; print(LabApp().app_settings_dir)"
    overrides = Path(run(["python", "-c", where], variables).strip(), "overrides.json")
    if folder.resolve() not in overrides.resolve().parents:
        problems.append(f"JupyterLab reads its settings from {overrides.parent}, not from {folder}")
    settings = json.loads(overrides.read_text()) if overrides.exists() else {}
    news = settings.get("@jupyterlab/apputils-extension:notification", {}).get("fetchNews")
    if news != "false":
        problems.append(f"JupyterLab asks whether to fetch its news: fetchNews is {news!r}")
    return problems


def test_postbuild_gives_the_lessons_kernel_as_default_and_no_news_question(tmp_path):
    folder = tmp_path / "binder-env"
    variables = fresh_environment(folder)
    run(["bash", str(POSTBUILD)], variables)
    assert what_binder_gives(folder, variables) == []


def test_the_check_fails_a_postbuild_that_does_not_run_setup(tmp_path):
    folder = tmp_path / "binder-env"
    variables = fresh_environment(folder)
    script = POSTBUILD.read_text()
    without = "\n".join(line for line in script.splitlines() if "wspatterns setup" not in line)
    assert without != script.rstrip("\n")
    (tmp_path / "postBuild").write_text(without)
    run(["bash", str(tmp_path / "postBuild")], variables)
    problems = what_binder_gives(folder, variables)
    assert [problem.split()[:3] for problem in problems] == [
        ["no", "wspatterns", "kernel;"],
        ["the", "server's", "default"],
        ["JupyterLab", "asks", "whether"],
    ], problems


def test_the_check_fails_a_kernel_that_runs_another_environments_python(tmp_path):
    from wspatterns.lab import setup

    folder = tmp_path / "binder-env"
    variables = fresh_environment(folder)
    setup(str(folder))  # run by this Python: the kernel it installs there runs this Python
    problems = what_binder_gives(folder, variables)
    assert len(problems) == 1 and "the wspatterns kernel runs" in problems[0], problems
