"""open_store: URL schemes, errors for bad URLs, SQLite defaults."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mloop.config import load_settings
from mloop.errors import StoreError
from mloop.store import SUPPORTED_SCHEMES, PostgresStore, SQLiteStore, open_store


def test_unknown_scheme_lists_supported_ones() -> None:
    with pytest.raises(StoreError) as info:
        open_store("mysql://root@localhost/db")
    for scheme in SUPPORTED_SCHEMES:
        assert scheme in str(info.value)


def test_close_misspelling_gets_a_suggestion() -> None:
    with pytest.raises(StoreError, match="Did you mean 'sqlite'"):
        open_store("sqlit:///x.db")


def test_not_a_url() -> None:
    with pytest.raises(StoreError, match="not a database URL"):
        open_store("just words")


def test_postgresql_scheme_maps_to_psycopg() -> None:
    assert SUPPORTED_SCHEMES["postgresql"] is PostgresStore
    assert SUPPORTED_SCHEMES["postgresql+psycopg"] is PostgresStore


def test_default_settings_url_creates_home_dir_in_wal_mode(project_dir: Path) -> None:
    settings = load_settings(None)
    with open_store(settings.store_url) as store:
        assert isinstance(store, SQLiteStore)
        store.record_event("store.opened", "store", "default location")
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    assert (settings.home_dir / "mloop.db").is_file()


def test_in_memory_store_shares_one_database_across_threads() -> None:
    import threading

    with open_store("sqlite://") as store:
        worker = threading.Thread(target=store.record_event, args=("a.b", "s", "from a thread"))
        worker.start()
        worker.join()
        assert [e.reason for e in store.events()] == ["from a thread"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions as non-root")
def test_unwritable_location_is_a_store_error(tmp_path: Path) -> None:
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(StoreError, match="could not") as info:
            open_store(f"sqlite:///{locked / 'mloop.db'}")
        assert info.value.__cause__ is not None
    finally:
        locked.chmod(0o700)


def test_unreachable_postgres_is_a_store_error_naming_the_url() -> None:
    # Port 1 on loopback refuses at once; the password must not leak into the message.
    with pytest.raises(StoreError, match=r"127\.0\.0\.1:1") as info:
        open_store("postgresql://u:secret@127.0.0.1:1/db?connect_timeout=2")
    assert "secret" not in str(info.value)
    assert "reachable" in str(info.value)
