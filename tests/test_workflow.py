"""The GitHub Actions workflow a fork checks its lessons with: .github/workflows/test.yml.

It must run what CI runs here and nothing else, `bash .ci/run` (which runs `make test`), in a
Debian container with a Python the kit supports, so that a fork's green check means what a
green `make test` means. The checks below read the file; they cannot run it (no Docker here).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "test.yml"
CI_RUN = ROOT / ".ci" / "run"

#: The one command that tests, the same one CI runs on this machine.
COMMAND = "bash .ci/run"
TRIGGERS = {"push", "pull_request", "workflow_dispatch"}
#: `make test` measured on a 2-core machine (10-13 minutes). A job gets twice that at least,
#: for the image, apt, pip and npm, and a runner slower than ours; CI's budget is 90.
MAKE_TEST_MINUTES = 13
MOST_MINUTES = 90
#: Full python images (not slim: they lack make) on Debian releases that package chromium.
IMAGE = re.compile(r"python:(?P<python>3\.\d+)(\.\d+)?-(?P<debian>bookworm|trixie)")
STEP_KEYS = {"name", "uses", "with", "run"}


def read(path: Path) -> dict[str, Any]:
    """A workflow as a dict; YAML 1.1 reads the key ``on`` as True, so it is put back."""
    workflow = yaml.safe_load(path.read_text())
    if True in workflow:
        workflow["on"] = workflow.pop(True)
    return dict(workflow)


def requires_python() -> SpecifierSet:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return SpecifierSet(project["requires-python"])


def workflow_problems(path: Path) -> list[str]:
    """How the workflow at ``path`` strays from running `bash .ci/run` on every push, pull
    request and by hand, in a Debian container, within CI's budget; empty when it does not."""
    workflow = read(path)
    problems = []
    on = workflow.get("on") or {}
    if isinstance(on, str | list):
        on = dict.fromkeys([on] if isinstance(on, str) else on)
    for trigger in sorted(TRIGGERS - on.keys()):
        problems.append(f"it is not run on {trigger}")
    for trigger in ("push", "pull_request"):
        if on.get(trigger):
            problems.append(f"{trigger} is filtered ({on[trigger]}): a fork checks every one")
    if "env" in workflow:
        problems.append(f"the workflow sets env {workflow['env']}: .ci/run sets what it needs")
    jobs = workflow.get("jobs") or {}
    if len(jobs) != 1:
        return [*problems, f"{len(jobs)} jobs, not one: {sorted(jobs)}"]
    job = next(iter(jobs.values()))
    if not str(job.get("runs-on", "")).startswith("ubuntu-"):
        problems.append(f"runs-on {job.get('runs-on')!r} is not a GitHub-hosted Linux runner")
    container = job.get("container")
    image = container.get("image") if isinstance(container, dict) else container
    found = IMAGE.fullmatch(str(image))
    if not found:
        problems.append(f"container {image!r} is not a full python image on Debian")
    elif found["python"] not in requires_python():
        problems.append(f"{image} has Python {found['python']}; the kit: {requires_python()}")
    if isinstance(container, dict) and set(container) - {"image"}:
        problems.append(f"the container has more than an image: {container}")
    timeout = job.get("timeout-minutes")
    if not isinstance(timeout, int) or not 2 * MAKE_TEST_MINUTES <= timeout <= MOST_MINUTES:
        problems.append(
            f"timeout-minutes is {timeout!r}, not between {2 * MAKE_TEST_MINUTES} "
            f"(make test takes {MAKE_TEST_MINUTES}) and {MOST_MINUTES} (CI's budget)"
        )
    concurrency = workflow.get("concurrency") or job.get("concurrency") or {}
    if not isinstance(concurrency, dict) or "github.ref" not in concurrency.get("group", ""):
        problems.append(f"concurrency {concurrency!r} does not group runs by branch")
    elif concurrency.get("cancel-in-progress") is not True:
        problems.append("a newer push does not cancel the run it supersedes")
    for key in ("env", "defaults", "services", "strategy", "if", "continue-on-error"):
        if key in job:
            problems.append(f"the job sets {key}: {job[key]!r}")
    steps = job.get("steps") or []
    for step in steps:
        if set(step) - STEP_KEYS:
            problems.append(f"a step sets {sorted(set(step) - STEP_KEYS)}: {step}")
    runs = [step["run"].strip() for step in steps if "run" in step]
    if runs != [COMMAND]:
        problems.append(f"the commands run are {runs}, not exactly [{COMMAND!r}]")
    uses = [step["uses"] for step in steps if "uses" in step]
    if not uses or any(not use.startswith("actions/checkout@") for use in uses):
        problems.append(f"the actions used are {uses}, not one checkout")
    elif "uses" not in steps[0]:
        problems.append("the checkout is not the first step")
    return problems


def ci_run_problems(path: Path) -> list[str]:
    """How the script at ``path`` strays from running `make test` last, with CI=true."""
    lines = [line.strip() for line in path.read_text().splitlines()]
    commands = [line for line in lines if line and not line.startswith("#")]
    problems = []
    if "export CI=true" not in commands:
        problems.append("it does not export CI=true (browser and hub tests could be skipped)")
    if not commands or commands[-1] != "make test":
        problems.append(f"its last command is {commands[-1:]}, not make test")
    return problems


def test_the_workflow_runs_ci_run_and_nothing_else():
    assert workflow_problems(WORKFLOW) == []


def test_ci_run_runs_make_test_with_ci_true():
    assert ci_run_problems(CI_RUN) == []


def plant(tmp_path: Path, change: Any) -> Path:
    """The real workflow with ``change`` (a function of it and its one job) made."""
    workflow = read(WORKFLOW)
    change(workflow, next(iter(workflow["jobs"].values())))
    planted = tmp_path / "test.yml"
    planted.write_text(yaml.safe_dump(workflow, sort_keys=False))
    return planted


def step(job: dict[str, Any], run: str) -> None:
    job["steps"].append({"run": run})


WRONG = {
    "no pull_request": (lambda w, j: w["on"].pop("pull_request"), "not run on pull_request"),
    "no workflow_dispatch": (lambda w, j: w["on"].pop("workflow_dispatch"), "workflow_dispatch"),
    "a list of two": (lambda w, j: w.update(on=["push", "pull_request"]), "workflow_dispatch"),
    "main only": (lambda w, j: w["on"].update(push={"branches": ["main"]}), "push is filtered"),
    "make test itself": (lambda w, j: j["steps"][1].update(run="make test"), "commands run"),
    "an extra command": (lambda w, j: step(j, "pip install x"), "commands run"),
    "or true": (lambda w, j: j["steps"][1].update(run="bash .ci/run || true"), "commands run"),
    "a step's env": (lambda w, j: j["steps"][1].update(env={"CI": "false"}), "a step sets"),
    "the job's env": (lambda w, j: j.update(env={"WSPATTERNS_TIMEOUT": "1"}), "job sets env"),
    "the workflow's env": (lambda w, j: w.update(env={"CI": "false"}), "workflow sets env"),
    "no checkout": (lambda w, j: j["steps"].pop(0), "not one checkout"),
    "setup-node": (lambda w, j: j["steps"].insert(0, {"uses": "actions/setup-node@v5"}), "used"),
    "Ubuntu itself": (lambda w, j: j.pop("container"), "not a full python image"),
    "a slim image": (lambda w, j: j.update(container="python:3.12-slim-bookworm"), "not a full"),
    "Alpine": (lambda w, j: j.update(container="python:3.12-alpine"), "not a full python"),
    "Python 3.10": (lambda w, j: j.update(container="python:3.10-bookworm"), "Python 3.10"),
    "no timeout": (lambda w, j: j.pop("timeout-minutes"), "timeout-minutes is None"),
    "too short": (lambda w, j: j.update({"timeout-minutes": 15}), "timeout-minutes is 15"),
    "over budget": (lambda w, j: j.update({"timeout-minutes": 120}), "timeout-minutes is 120"),
    "no concurrency": (lambda w, j: w.pop("concurrency"), "does not group runs"),
    "no cancel": (lambda w, j: w["concurrency"].update({"cancel-in-progress": False}), "cancel"),
    "two jobs": (lambda w, j: w["jobs"].update(more=j), "2 jobs"),
}


@pytest.mark.parametrize("wrong", WRONG)
def test_the_check_fails_a_planted_wrong_workflow(wrong, tmp_path):
    change, said = WRONG[wrong]
    problems = workflow_problems(plant(tmp_path, change))
    assert len(problems) == 1 and said in problems[0], problems


def test_the_check_fails_a_ci_run_that_does_not_end_in_make_test(tmp_path):
    planted = tmp_path / "run"
    planted.write_text(CI_RUN.read_text().replace("make test", "make test || true"))
    assert ci_run_problems(planted) == ["its last command is ['make test || true'], not make test"]
    planted.write_text(CI_RUN.read_text().replace("export CI=true", ""))
    assert ci_run_problems(planted) == [
        "it does not export CI=true (browser and hub tests could be skipped)"
    ]
