"""Throwaway PostgreSQL cluster for the test session.

A real ``postgres`` server is started from the locally installed binaries
(``make test`` installs them through ``scripts/install-system-packages.sh``).
It listens on 127.0.0.1 only, on a free port, with trust auth. For tests durability
is switched off for speed; a benchmark asks for a durable cluster (``durable=True``:
PostgreSQL's defaults, every commit flushed to disk), as production runs.  ``initdb``
refuses to run as root, so under root the cluster is owned and run by a dedicated
system user.
"""

from __future__ import annotations

import atexit
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from .processes import free_port

SYSTEM_USER = "kapfhir-pg"
SUPERUSER = "postgres"
DEFAULT_DB = "kapfhir_test"
WAIT_SECONDS = 30.0
LOG_TAIL_LINES = 40
PG_LIB_ROOT = Path("/usr/lib/postgresql")


class PostgresHarnessError(RuntimeError):
    """The throwaway PostgreSQL cluster could not be prepared, started or stopped."""


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name)) or (0,)


def find_bindir() -> Path:
    """Directory holding initdb/pg_ctl/postgres, or a clear error telling how to get them."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        # Debian's pg_config comes from libpq-dev and may name a server version
        # that is not installed, so it is only a hint checked below.
        result = subprocess.run(
            [pg_config, "--bindir"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if result.returncode == 0 and result.stdout.strip():
            candidates.append(Path(result.stdout.strip()))
    candidates.extend(path.parent for path in sorted(PG_LIB_ROOT.glob("*/bin"), key=_version_key, reverse=True))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for bindir in candidates:
        if all(os.access(bindir / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return bindir
    raise PostgresHarnessError(
        "No PostgreSQL server binaries (initdb, pg_ctl, postgres) were found via pg_config, "
        "/usr/lib/postgresql/*/bin or PATH. Run `make test`, which installs them through "
        "scripts/install-system-packages.sh."
    )


def ensure_system_user(name: str = SYSTEM_USER) -> pwd.struct_passwd:
    """Create (once) the non-root system user that owns the cluster when running as root."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
        result = subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        # A concurrent test process may have created it (exit 9) or hold the
        # passwd lock (exit 10): look again until the deadline.
        if result.returncode not in (0, 9, 10) or time.monotonic() > deadline:
            raise PostgresHarnessError(f"useradd {name} failed with exit {result.returncode}: {result.stderr.strip()}")
        if result.returncode == 10:
            time.sleep(0.2)


class PostgresServer:
    """A PostgreSQL cluster in a temp directory, reachable at ``self.url``.

    Use as a context manager, or call ``start()`` and ``stop()``.
    """

    def __init__(self, database: str = DEFAULT_DB, bindir: Path | None = None, *, durable: bool = False) -> None:
        self.database = database
        self.durable = durable
        self.user = SUPERUSER
        self.host = "127.0.0.1"
        self.port = 0
        self._bindir = bindir
        self._run_as: str | None = None
        self._tmpdir: Path | None = None
        self._started = False

    # -- public API -------------------------------------------------------

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the session database."""
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        self._require_started()
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    @property
    def data_dir(self) -> Path:
        return self._require_tmpdir() / "data"

    @property
    def log_path(self) -> Path:
        return self._require_tmpdir() / "server.log"

    def start(self) -> Self:
        if self._started:
            return self
        bindir = self._bindir or find_bindir()
        self._bindir = bindir
        self._tmpdir = Path(tempfile.mkdtemp(prefix="kapfhir-pg-"))
        try:
            if os.geteuid() == 0:
                account = ensure_system_user()
                self._run_as = account.pw_name
                os.chown(self._tmpdir, account.pw_uid, account.pw_gid)
            self._initdb()
            self._start_server()
            self._started = True
            atexit.register(self.stop)
            self._wait_until_accepting()
            self._create_database(self.database)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop immediately (no clean shutdown is needed) and delete the cluster."""
        atexit.unregister(self.stop)
        self._started = False
        tmpdir = self._tmpdir
        if tmpdir is None:
            return
        data_dir = tmpdir / "data"
        # Also covers a start that failed half-way and left a server running.
        if (data_dir / "postmaster.pid").exists() and self._bindir is not None:
            stop_cmd = [str(self._bindir / "pg_ctl"), "stop", "-D", str(data_dir)]
            stop_cmd += ["-m", "immediate", "-w", "-t", str(int(WAIT_SECONDS))]
            if self._run(stop_cmd, check=False).returncode != 0:
                _kill_postmaster(data_dir)
        self._tmpdir = None
        shutil.rmtree(tmpdir, ignore_errors=True)

    def create_database(self, prefix: str = "test") -> str:
        """Create a fresh, uniquely named database and return its SQLAlchemy URL."""
        safe = re.sub(r"[^a-z0-9_]", "_", prefix.lower())[:40] or "test"
        name = f"{safe}_{secrets.token_hex(4)}"
        self._create_database(name)
        return self.url_for(name)

    def drop_database(self, name_or_url: str) -> None:
        name = name_or_url.rsplit("/", 1)[-1]
        with self._admin_connection() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except (OSError, PostgresHarnessError):
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals --------------------------------------------------------

    def _require_tmpdir(self) -> Path:
        if self._tmpdir is None:
            raise PostgresHarnessError("PostgresServer is not started")
        return self._tmpdir

    def _require_started(self) -> None:
        if not self._started:
            raise PostgresHarnessError("PostgresServer is not started")

    def _run(self, argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        command = list(argv)
        if self._run_as:
            command = ["runuser", "-u", self._run_as, "--", *command]
        result = subprocess.run(
            command,
            cwd=self._require_tmpdir(),  # the run-as user may not be able to enter our cwd
            capture_output=True,
            text=True,
            timeout=WAIT_SECONDS + 30,
            check=False,
        )
        if check and result.returncode != 0:
            raise PostgresHarnessError(
                f"{' '.join(command)} failed with exit {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}\n"
                f"server log tail:\n{self.log_tail()}"
            )
        return result

    def _initdb(self) -> None:
        assert self._bindir is not None
        self._run(
            [
                str(self._bindir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        socket_dir = self._require_tmpdir()
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{socket_dir}'",
            "shared_buffers": "'32MB'",
            "max_connections": "100",
        }
        if not self.durable:  # tests: a crash of the machine may lose the cluster, which is thrown away anyway
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        # Root writes into files the run-as user owns; their ownership is kept.
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# kapfhir test harness\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        (self.data_dir / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")

    def _start_server(self) -> None:
        assert self._bindir is not None
        # The port is picked just before starting; on the rare lost race with
        # another process, try again with a new one.
        for attempt in range(3):
            self.port = free_port()
            result = self._run(
                [
                    str(self._bindir / "pg_ctl"),
                    "start",
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_path),
                    "-o",
                    f"-p {self.port}",
                    "-w",
                    "-t",
                    str(int(WAIT_SECONDS)),
                ],
                check=False,
            )
            if result.returncode == 0:
                return
            if "could not bind" not in self.log_tail() or attempt == 2:
                raise PostgresHarnessError(
                    f"pg_ctl start failed with exit {result.returncode}: "
                    f"{result.stderr.strip()}\nserver log tail:\n{self.log_tail()}"
                )

    def _connect(self, database: str) -> psycopg.Connection[TupleRow]:
        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            dbname=database,
            autocommit=True,
            connect_timeout=5,
        )

    def _admin_connection(self) -> psycopg.Connection[TupleRow]:
        self._require_started()
        return self._connect("postgres")

    def _wait_until_accepting(self) -> None:
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            try:
                with self._connect("postgres") as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise PostgresHarnessError(
                        f"PostgreSQL on 127.0.0.1:{self.port} did not accept connections "
                        f"within {WAIT_SECONDS:.0f}s: {exc}\nserver log tail:\n{self.log_tail()}"
                    ) from exc
                time.sleep(0.1)

    def _create_database(self, name: str) -> None:
        with self._admin_connection() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _kill_postmaster(data_dir: Path) -> None:
    """Last resort when pg_ctl could not stop the server: SIGKILL the postmaster."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
