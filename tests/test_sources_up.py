"""`headwater up` runs configured sources: source commits reach the log."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from headwater.config import load_settings
from headwater.errors import ConfigError
from headwater.log.postgres import PostgresLog
from headwater.storage.embedded import EmbeddedPostgres

from .conftest import new_database, query


def test_source_config_errors_name_key_and_fix(tmp_path: Path) -> None:
    cfg = tmp_path / "headwater.toml"
    cfg.write_text(
        '[[sources]]\nname = "crm"\nkind = "postgres"\ndsn = "mysql://x"\ntables = ["t"]\n'
    )
    with pytest.raises(ConfigError, match=r"sources\[0\]\.dsn: <from|sources\[0\]\.dsn: 'mysql"):
        load_settings(cfg)
    cfg.write_text('[[sources]]\nname = "crm"\nkind = "oracle"\ntables = ["t"]\n')
    with pytest.raises(ConfigError, match=r"sources\[0\]\.kind: 'oracle' is not valid"):
        load_settings(cfg)


def test_up_captures_a_postgres_source_into_the_log(
    tmp_path: Path, dsn: str, pg_server: EmbeddedPostgres
) -> None:
    source = new_database(pg_server, "src")
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute("CREATE TABLE customers (id int PRIMARY KEY, name text)")
        conn.execute("INSERT INTO customers VALUES (1, 'Ada'), (2, 'Grace')")
    cfg = tmp_path / "headwater.toml"
    cfg.write_text(
        f'[storage]\npostgres = "{dsn}"\n[server]\nenabled = false\n'
        f'[[sources]]\nname = "crm-eu"\nkind = "postgres"\ndsn = "{source}"\n'
        'tables = ["public.customers"]\n'
    )
    up = subprocess.Popen(
        [sys.executable, "-m", "headwater", "up", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    topic = "crm-eu.public.customers"
    try:
        deadline = time.monotonic() + 60
        log = None
        while True:  # the snapshot rows arrive first
            assert up.poll() is None, up.stdout.read() if up.stdout else ""
            assert time.monotonic() < deadline, "snapshot did not arrive"
            if query(dsn, "SELECT count(*) FROM headwater.topics WHERE name = %s", (topic,))[0][0]:
                log = log or PostgresLog(dsn)
                if sum(p.end_offset for p in log.partitions(topic)) >= 2:
                    break
            time.sleep(0.2)
        with psycopg.connect(source, autocommit=True) as conn:
            conn.execute("UPDATE customers SET name = 'Ada L.' WHERE id = 1")
            conn.execute("DELETE FROM customers WHERE id = 2")
        while sum(p.end_offset for p in log.partitions(topic)) < 4:
            assert time.monotonic() < deadline, "changes did not arrive"
            time.sleep(0.1)
        events = [
            json.loads(r.value)
            for p in range(3)
            for r in log.read(topic, p, 0)
            if r.value is not None
        ]
        ops = sorted((e["op"], (e["after"] or e["before"])["id"]) for e in events)
        assert ops == [("d", 2), ("r", 1), ("r", 2), ("u", 1)]
        st = subprocess.run(
            [sys.executable, "-m", "headwater", "status", "--json", "--config", str(cfg)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        (src,) = json.loads(st.stdout)["sources"]
        assert src["name"] == "crm-eu" and src["snapshot_done"] is True
        assert src["snapshot_rows"] == 2
        assert src["position"] and src["lag_bytes"] is not None and src["error"] is None
        (upd,) = [e for e in events if e["op"] == "u"]
        assert upd["after"] == {"id": 1, "name": "Ada L."}
        assert upd["source"]["table"] == "customers" and upd["source"]["lsn"]
    finally:
        up.send_signal(signal.SIGTERM)
        code = up.wait(60)
        with psycopg.connect(source, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                " WHERE slot_name = 'headwater_crm_eu'"
            )
    assert code == 0
    # The slot is gone now: the source refuses, naming the command that fixes it.
    hw = [sys.executable, "-m", "headwater"]
    refused = subprocess.run(
        [*hw, "source", "--name", "crm-eu", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1 and "`headwater resnapshot crm-eu`" in refused.stderr
    fixed = subprocess.run(
        [*hw, "resnapshot", "crm-eu", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert fixed.returncode == 0, fixed.stderr
    assert query(dsn, "SELECT count(*) FROM headwater.source_state WHERE source = 'crm-eu'") == [
        (0,)
    ]
    wrong = subprocess.run(
        [*hw, "resnapshot", "nope", "--config", str(cfg)], capture_output=True, text=True
    )
    assert wrong.returncode == 2 and "valid: crm-eu" in wrong.stderr
