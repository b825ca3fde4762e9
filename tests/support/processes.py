"""Run the image's own CMD and HEALTHCHECK from the Dockerfile as local processes.

The end-to-end tests start exactly the command the container would run, so a
drift between the Dockerfile and the code shows up without building an image.
Everything listens on loopback only.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
DEFAULT_HEALTHCHECK_TIMEOUT = 30.0  # Docker's default --timeout


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class HealthCheck:
    """A ``HEALTHCHECK ... CMD`` instruction: exec form (list) or shell form (str)."""

    command: list[str] | str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def argv(self) -> list[str]:
        if isinstance(self.command, str):
            return ["/bin/sh", "-c", self.command]
        return list(self.command)

    @property
    def timeout_seconds(self) -> float:
        value = self.options.get("timeout")
        return _duration_seconds(value) if value else DEFAULT_HEALTHCHECK_TIMEOUT


@dataclass(frozen=True)
class DockerfileSpec:
    cmd: list[str]
    healthcheck: HealthCheck | None


def _duration_seconds(value: str) -> float:
    """Docker durations such as ``5s``, ``1m30s``, ``500ms``."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"unsupported Docker duration: {value!r}")
    return sum(float(number) * units[unit] for number, unit in parts)


def _logical_lines(text: str) -> list[str]:
    """Instructions with backslash continuations joined and comments dropped."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and current):
            continue  # comment lines and blank lines inside a continuation are ignored
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        if current.strip():
            lines.append(current.strip())
        current = ""
    if current.strip():
        lines.append(current.strip())
    return lines


def _parse_healthcheck(rest: str) -> HealthCheck | None:
    if rest.strip().upper() == "NONE":
        return None
    options: dict[str, str] = {}
    remaining = rest.strip()
    while remaining.startswith("--"):
        token, _, remaining = remaining.partition(" ")
        key, _, value = token[2:].partition("=")
        options[key] = value
        remaining = remaining.lstrip()
    keyword, _, command = remaining.partition(" ")
    if keyword.upper() != "CMD" or not command.strip():
        raise ValueError(f"HEALTHCHECK without CMD: {rest!r}")
    command = command.strip()
    if command.startswith("["):
        argv = json.loads(command)
        if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
            raise ValueError(f"HEALTHCHECK exec form must be a JSON list of strings: {command}")
        return HealthCheck(command=argv, options=options)
    return HealthCheck(command=command, options=options)


def parse_dockerfile(path: Path) -> DockerfileSpec:
    """The last CMD (JSON exec form required) and the last HEALTHCHECK, as Docker applies them."""
    cmd: list[str] | None = None
    healthcheck: HealthCheck | None = None
    for line in _logical_lines(path.read_text()):
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "CMD":
            try:
                parsed = json.loads(rest)
            except json.JSONDecodeError as exc:
                raise ValueError(f"CMD must use the JSON exec form, got: {rest!r}") from exc
            if not isinstance(parsed, list) or not parsed:
                raise ValueError(f"CMD must be a non-empty JSON list, got: {rest!r}")
            cmd = [str(arg) for arg in parsed]
        elif instruction == "HEALTHCHECK":
            healthcheck = _parse_healthcheck(rest)
    if cmd is None:
        raise ValueError(f"no CMD instruction in {path}")
    return DockerfileSpec(cmd=cmd, healthcheck=healthcheck)


def venv_bin(repo_root: Path) -> Path:
    local = repo_root / ".venv" / "bin"
    return local if local.is_dir() else Path(sys.executable).parent


@dataclass(frozen=True)
class CapturedLogs:
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"


class RunningService:
    """Handle on the Dockerfile's CMD running as a local process."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        port: int,
        env: dict[str, str],
        cwd: Path,
        healthcheck: HealthCheck | None,
        log_dir: tempfile.TemporaryDirectory[str],
    ) -> None:
        self.process = process
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.env = env
        self._cwd = cwd
        self._healthcheck = healthcheck
        self._log_dir = log_dir  # removed when this handle is garbage-collected

    def logs(self) -> CapturedLogs:
        def read(name: str) -> str:
            path = Path(self._log_dir.name) / name
            return path.read_text(errors="replace") if path.exists() else ""

        return CapturedLogs(stdout=read("stdout.log"), stderr=read("stderr.log"))

    def run_healthcheck(self) -> int:
        """Run the Dockerfile's HEALTHCHECK command; 124 if it exceeds its --timeout."""
        if self._healthcheck is None:
            raise ValueError("the Dockerfile has no HEALTHCHECK")
        try:
            result = subprocess.run(
                self._healthcheck.argv,
                cwd=self._cwd,
                env={**self.env, "PORT": str(self.port)},
                capture_output=True,
                timeout=self._healthcheck.timeout_seconds,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return 124
        return result.returncode

    def stop(self) -> int | None:
        """SIGTERM (graceful), then SIGKILL the whole process group after a bounded wait."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait(timeout=STOP_TIMEOUT)
        return self.process.returncode

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _healthz_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def run_dockerfile_cmd(
    repo_root: Path,
    env: Mapping[str, str],
    port: int | None = None,
    dockerfile: Path | None = None,
) -> RunningService:
    """Start the Dockerfile's CMD bound to 127.0.0.1:<port> and wait for /healthz to answer 200.

    The child inherits this process's environment minus any ``KAPFHIR_*``
    variables, so ``env`` alone configures the service.
    """
    repo_root = Path(repo_root).resolve()
    spec = parse_dockerfile(dockerfile or repo_root / "Dockerfile")
    port = port or free_port()
    bindir = venv_bin(repo_root)
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("KAPFHIR_")}
    child_env.update(env)
    child_env["PATH"] = os.pathsep.join([str(bindir), child_env.get("PATH", os.defpath)])
    child_env["PYTHONUNBUFFERED"] = "1"
    child_env["KAPFHIR_BIND"] = f"127.0.0.1:{port}"

    log_dir = tempfile.TemporaryDirectory(prefix="kapfhir-svc-")
    stdout_path = Path(log_dir.name) / "stdout.log"
    stderr_path = Path(log_dir.name) / "stderr.log"
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        process = subprocess.Popen(
            spec.cmd,
            cwd=repo_root,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            # Own process group, so stop() can kill the workers too.
            start_new_session=True,
        )
    service = RunningService(process, port, child_env, repo_root, spec.healthcheck, log_dir)

    deadline = time.monotonic() + START_TIMEOUT
    try:
        while not _healthz_ok(f"{service.base_url}/healthz"):
            if process.poll() is not None or time.monotonic() > deadline:
                exited = process.poll()
                reason = f"exited with {exited}" if exited is not None else "timed out"
                raise RuntimeError(
                    f"{shlex.join(spec.cmd)} {reason} before GET /healthz answered 200 "
                    f"on {service.base_url} (within {START_TIMEOUT:.0f}s)\n{service.logs()}"
                )
            time.sleep(0.1)
    except BaseException:  # an interrupt while it starts must not leave it running
        service.stop()
        raise
    return service
