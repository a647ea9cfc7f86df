from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from headwater.config import load_settings
from headwater.errors import ConfigError


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "headwater", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )


def test_defaults_are_embedded(tmp_path: Path) -> None:
    s = load_settings(tmp_path / "absent.toml", required=False)
    assert s.storage.embedded and s.storage.log == "postgres"
    assert s.data_dir == (tmp_path / ".headwater").resolve()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            '[storage]\npostgress = "embedded"\n',
            "storage.postgress: unknown key; valid keys here: postgres, log, kafka",
        ),
        (
            "[worker]\nbatch_max_events = 'many'\n",
            "worker.batch_max_events: 'many' is not valid: Input should be a valid integer",
        ),
        ('[storage]\nlog = "kafak"\n', "storage.log: 'kafak' is not valid"),
        (
            '[[pipelines]]\nname = "p"\ninput = "t"\nprocessor = "nope"\n',
            "pipelines[0].processor: 'nope' is not valid: expected one of 'table'",
        ),
        (
            '[[pipelines]]\nname = "p"\ninput = "t"\nprocessor = "table"\ntable = "x"\nbogus = 1\n',
            "pipelines[0].bogus: unknown key; valid keys here: name, input",
        ),
    ],
)
def test_invalid_config_names_file_key_and_fix(tmp_path: Path, body: str, expected: str) -> None:
    cfg = tmp_path / "headwater.toml"
    cfg.write_text(body)
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg)
    assert str(exc.value).startswith(f"{cfg}: ")
    assert expected in str(exc.value)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ('[storage]\npostgress = "embedded"\n', "storage.postgress: unknown key"),
        ("[server]\nport = 'eighty'\n", "server.port: 'eighty' is not valid"),
        (None, "file not found; create one with 'headwater init'"),
    ],
    ids=["wrong-key", "wrong-type", "missing-file"],
)
def test_cli_config_errors_are_one_line_and_exit_2(
    tmp_path: Path, body: str | None, needle: str
) -> None:
    cfg = tmp_path / "headwater.toml"
    if body is not None:
        cfg.write_text(body)
    res = run_cli("status", "--config", str(cfg))
    assert res.returncode == 2, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert needle in lines[0]
    assert "Traceback" not in res.stderr


def test_env_interpolation_and_secrets_never_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HW_TEST_PG", "postgresql://u:hunter2@db.example:5432/hw")
    cfg = tmp_path / "headwater.toml"
    cfg.write_text('[storage]\npostgres = "${HW_TEST_PG}"\n')
    s = load_settings(cfg)
    assert s.storage.postgres.get_secret_value().endswith("@db.example:5432/hw")
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.model_dump())

    monkeypatch.setenv("HW_TEST_PG", "mysql://u:hunter2@db")
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg)
    assert "storage.postgres" in str(exc.value) and "hunter2" not in str(exc.value)

    monkeypatch.delenv("HW_TEST_PG")
    with pytest.raises(ConfigError, match="environment variable HW_TEST_PG is not set"):
        load_settings(cfg)


def test_pipeline_must_name_a_defined_topic(tmp_path: Path, dsn: str) -> None:
    from headwater.engine.runtime import bootstrap

    cfg = tmp_path / "headwater.toml"
    cfg.write_text(
        f'[storage]\npostgres = "{dsn}"\n[[pipelines]]\nname = "p"\ninput = "nope"\n'
        'processor = "table"\ntable = "t"\n'
    )
    with pytest.raises(ConfigError, match="topic 'nope' is not defined"):
        bootstrap(load_settings(cfg))


def test_init_writes_a_valid_commented_config(tmp_path: Path) -> None:
    res = run_cli("init", str(tmp_path / "proj"))
    assert res.returncode == 0, res.stderr
    text = (tmp_path / "proj" / "headwater.toml").read_text()
    assert text.count("#") > 20
    s = load_settings(tmp_path / "proj" / "headwater.toml")
    assert [p.name for p in s.pipelines] == ["events-to-table"]
    again = run_cli("init", str(tmp_path / "proj"))
    assert again.returncode == 2 and "already exists" in again.stderr


def test_unknown_command_is_usage_error() -> None:
    assert run_cli("frobnicate").returncode == 2
