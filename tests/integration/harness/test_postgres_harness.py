"""The throwaway PostgreSQL harness starts a real server reachable through SQLAlchemy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.support import postgres
from tests.support.postgres import PostgresServer


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    with PostgresServer() as pg:
        yield pg


def test_url_uses_psycopg3_on_loopback(server: PostgresServer) -> None:
    assert server.url == (f"postgresql+psycopg://postgres@127.0.0.1:{server.port}/{server.database}")


def test_create_insert_and_read_back(server: PostgresServer) -> None:
    engine = create_engine(server.url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE probe (id serial PRIMARY KEY, note text)"))
            conn.execute(text("INSERT INTO probe (note) VALUES (:n)"), [{"n": "a"}, {"n": "b"}])
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT note FROM probe ORDER BY id")).scalars().all()
    finally:
        engine.dispose()
    assert rows == ["a", "b"]


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of LISTEN sockets on ``port``, from /proc/net/tcp{,6}."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] == "0A" and int(port_hex, 16) == port:
                found.add(address)
    return found


def test_listens_on_ipv4_loopback_only(server: PostgresServer) -> None:
    engine = create_engine(server.url)
    try:
        with engine.connect() as conn:
            setting = conn.execute(text("SHOW listen_addresses")).scalar_one()
    finally:
        engine.dispose()
    assert setting == "127.0.0.1"
    if Path("/proc/net/tcp").exists():
        # 127.0.0.1 in /proc/net/tcp's little-endian hex.
        assert _listening_addresses(server.port) == {"0100007F"}


def test_fresh_database_per_module(server: PostgresServer) -> None:
    url = server.create_database("test_postgres_harness")
    assert url != server.url
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            tables = conn.execute(text("SELECT count(*) FROM pg_tables WHERE tablename = 'probe'")).scalar_one()
    finally:
        engine.dispose()
    assert tables == 0
    server.drop_database(url)


def test_stop_removes_the_cluster() -> None:
    pg = PostgresServer().start()
    tmpdir = pg.data_dir.parent
    assert (pg.data_dir / "postmaster.pid").exists()
    pg.stop()
    assert not tmpdir.exists()
    pg.stop()  # idempotent


def test_missing_binaries_fail_loudly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(postgres.shutil, "which", lambda _name: None)
    monkeypatch.setattr(postgres, "PG_LIB_ROOT", tmp_path)
    with pytest.raises(postgres.PostgresHarnessError, match="make test"):
        PostgresServer().start()


def test_a_durable_cluster_flushes_commits_as_production_does(server: PostgresServer, tmp_path: Path) -> None:
    """Tests run on a cluster without fsync, for speed; the benchmarks ask for a durable one (PostgreSQL's defaults)
    and refuse to measure a database whose commits are not flushed (``commit_settings``)."""
    from tests.support.harness import commit_settings

    settings, durable = commit_settings(server.url)  # the tests' cluster
    assert (settings["fsync"], durable) == ("off", False)
    with PostgresServer(durable=True) as production_like:
        assert commit_settings(production_like.url) == (
            {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"},
            True,
        )
    assert commit_settings(f"sqlite:///{tmp_path}/k.db") == ({"journal_mode": "wal", "synchronous": "FULL"}, True)
