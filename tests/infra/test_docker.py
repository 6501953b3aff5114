"""infra/docker: both Dockerfiles are hadolint-clean (no findings at any level), are built from the same
lock and scripts/setup.sh, and run as a numeric non-root user; the image's commit reaches the manifests."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.servers import BIN

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((REPO / "infra" / "docker").glob("Dockerfile.*[!e]"))  # Dockerfile.cpu, Dockerfile.cuda
HADOLINT = str(BIN / "hadolint")


def test_both_variants_exist():
    assert [p.name for p in DOCKERFILES] == ["Dockerfile.cpu", "Dockerfile.cuda"]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_clean(path):
    # --failure-threshold info: even style notes fail; the few deliberate ignores are inline, with reasons.
    res = subprocess.run([HADOLINT, "--no-color", "--failure-threshold", "info", str(path)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_hadolint_finds_problems(tmp_path):
    """The linter really runs: a Dockerfile with known faults (latest tag, root user, cd) fails."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /tmp && pip install torch\n")
    res = subprocess.run([HADOLINT, "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "DL3007" in res.stdout and "DL3013" in res.stdout


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_same_lock_same_script_non_root(path):
    text = path.read_text()
    copies = re.findall(r"^COPY .*$", text, re.M)
    assert any("requirements.lock" in c and "pyproject.toml" in c for c in copies)
    assert any("scripts/setup.sh" in c for c in copies)
    assert text.count("RUN bash scripts/setup.sh") == 2  # dependencies layer, then the project itself
    user = re.findall(r"^USER (\S+)$", text, re.M)
    assert user and re.fullmatch(r"[1-9]\d*:[1-9]\d*", user[-1]), "USER must be numeric and not root"
    assert re.search(r"^WORKDIR /opt/fourm$", text, re.M)
    extras = re.search(r"FOURM_EXTRAS=(\w+)", text).group(1)
    optional = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "prefect-kubernetes" in " ".join(optional[extras])  # the Kubernetes worker is in the image
    assert re.search(r'FOURM_EXTRAS:-dev', (REPO / "scripts" / "setup.sh").read_text())


def test_image_commit_reaches_manifests():
    """The image has no .git: FOURM_GIT_COMMIT (a build arg) is the code version manifests record."""
    env = {**os.environ, "FOURM_GIT_COMMIT": "0123abc", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", "from fourm_core.manifest import git_commit; print(git_commit())"],
                         env=env, capture_output=True, text=True, timeout=60, cwd="/")
    assert out.stdout.strip() == "0123abc", out.stderr
