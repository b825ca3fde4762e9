"""The README's curl walk-through, run as written (bash, curl, jq, `kapfhir token`) against the service started as
the Dockerfile starts it, twice: the second run must give the same answers and create nothing."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator

import pytest
import requests

from tests.support.app import REPO_ROOT
from tests.support.processes import RunningService, run_dockerfile_cmd, venv_bin

pytestmark = pytest.mark.e2e


def walk_through() -> str:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Walk-through", 1)[1]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    workdir = tmp_path_factory.mktemp("walk-through")
    running = run_dockerfile_cmd(
        REPO_ROOT,
        {
            "KAPFHIR_DATABASE_URL": f"sqlite:///{workdir / 'kapfhir.db'}",
            "KAPFHIR_SIGNING_KEY_FILE": str(workdir / "signing-key.pem"),
            "KAPFHIR_WORKERS": "1",
        },
    )
    yield running
    running.stop()


def _run(service: RunningService) -> str:
    script = walk_through().replace("http://127.0.0.1:8000", service.base_url)
    script = script.replace(".venv/bin/kapfhir", str(venv_bin(REPO_ROOT) / "kapfhir"))
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=REPO_ROOT,
        env=service.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _count(service: RunningService, path: str) -> int:
    token = subprocess.run(
        [str(venv_bin(REPO_ROOT) / "kapfhir"), "token"], env=service.env, capture_output=True, text=True, check=True
    ).stdout.strip()
    answer = requests.get(f"{service.base_url}/api/v1{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    return int(answer.json()["total"])


def test_the_walk_through_works_and_can_be_run_twice(service: RunningService):
    first = _run(service)
    assert '"phase": "dosing"' in first
    assert "problems/" not in first, first  # no problem+json answer anywhere
    entries = int(first.strip().splitlines()[-1])
    assert entries > 10
    counts = {path: _count(service, path) for path in ("/patients", "/practitioners", "/episodes")}
    assert counts == {"/patients": 1, "/practitioners": 1, "/episodes": 1}
    second = _run(service)
    assert second == first
    assert {path: _count(service, path) for path in counts} == counts
