"""The two ways to install the kit must agree, and the notebooks must find its kernel."""

import re
import sys
import tomllib
from importlib.resources import files
from pathlib import Path

import nbformat
import yaml
from jupyter_client.kernelspec import KernelSpecManager

ROOT = Path(__file__).parent.parent
NAME = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$")
NOT_PACKAGES = {"python", "pip", "redis-server", "configurable-http-proxy"}  # not pip's


def requirements(lines: list[str]) -> dict[str, str]:
    """{normalized name: version specifier} for requirement strings."""
    found = {}
    for line in lines:
        name, spec = NAME.match(line).groups()
        found[re.sub(r"[-_.]+", "-", name).lower()] = spec.replace(" ", "")
    return found


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + sum(project["optional-dependencies"].values(), [])
    conda = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    listed = [entry for entry in conda if isinstance(entry, str)]
    listed += [entry for block in conda if isinstance(block, dict) for entry in block["pip"]]
    listed = [entry for entry in listed if not entry.startswith("-e")]
    from_conda = requirements(listed)
    for name in NOT_PACKAGES:
        from_conda.pop(name, None)
    assert from_conda == requirements(wanted)


def test_the_requirements_parser_sees_a_mismatch():
    assert requirements(["websockets>=17"]) != requirements(["websockets>=16"])
    assert requirements(["nest_asyncio2"]) == requirements(["nest-asyncio2"])


def test_the_kit_ships_its_type_hints():
    # PEP 561: without the marker, a learner's mypy treats every kit name as Any.
    assert (files("wspatterns") / "py.typed").is_file()
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]
    assert "py.typed" in package_data["wspatterns"]


def test_every_notebook_uses_the_kits_kernel():
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks
    for path in notebooks:
        assert nbformat.read(path, as_version=4).metadata.kernelspec.name == "wspatterns", path


def test_the_kits_kernel_runs_this_python():
    spec = KernelSpecManager().get_kernel_spec("wspatterns")
    assert Path(spec.argv[0]).resolve() == Path(sys.executable).resolve()
