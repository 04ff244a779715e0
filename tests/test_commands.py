"""The seed brief's commands exist: its make targets (each resolves to a recipe), its two
scripts (executable, valid bash, doing what they say), and the README lists them all."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ("local-run-phase1", "local-run-phase2", "local-build", "build", "clean", "fmt", "lint")
SCRIPTS = ("scripts/setup-dev.sh", "scripts/test-multi-leader.sh")


def make_n(target: str) -> str:
    make = shutil.which("make")
    assert make is not None
    done = subprocess.run(
        [make, "-n", target], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "REDIS_URL": "redis://127.0.0.1:1/0"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("target", TARGETS)
def test_the_seed_make_targets_exist(target: str) -> None:
    make_n(target)


def test_the_aliases_run_what_they_name() -> None:
    assert "MODE=phase1 exec .venv/bin/tracker pod" in make_n("local-run-phase1")
    assert "MODE=phase2 exec .venv/bin/tracker pod" in make_n("local-run-phase2")
    assert re.search(r"pip wheel .*-w dist \.", make_n("local-build"))
    assert "docker build -f docker/Dockerfile" in make_n("build")


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_seed_scripts_are_executable_bash(script: str) -> None:
    path = ROOT / script
    assert os.access(path, os.X_OK), script
    done = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert path.read_text().startswith("#!/usr/bin/env bash\n")


def test_test_multi_leader_runs_the_two_pod_demo() -> None:
    text = (ROOT / "scripts" / "test-multi-leader.sh").read_text()
    assert "exec make demo-multi" in text
    assert "python -m bench.demo_multi" in make_n("demo-multi").replace(".venv/bin/", "")


def test_the_readme_lists_every_seed_command() -> None:
    readme = (ROOT / "README.md").read_text()
    for command in [*(f"make {t}" for t in TARGETS), *SCRIPTS]:
        assert f"`{command}`" in readme, command
