import subprocess
import sys
from pathlib import Path

import pytest

from broker.config import SETTINGS, ConfigError, load_config

BROKER = [sys.executable, "-c", "from broker.main import main; main()"]


def test_defaults_are_kafkas() -> None:
    config = load_config(env={}, overrides=["broker.id=1"])
    assert config["num.partitions"] == 1
    assert config["socket.request.max.bytes"] == 104_857_600
    assert config["log.retention.ms"] == 7 * 24 * 3600 * 1000
    assert config["auto.create.topics.enable"] is True
    assert config.advertised_listeners == ["PLAINTEXT://127.0.0.1:9092"]
    assert config.log_config().max_message_bytes == 1_048_588


def test_sources_in_order_file_env_set(tmp_path: Path) -> None:
    file = tmp_path / "broker.toml"
    file.write_text(
        '"broker.id" = 3\n'
        "num.partitions = 6\n"  # a bare key, nested tables below: both forms work
        "[log]\ndirs = ['/data/a', '/data/b']\nretention.ms = 1000\n"
    )
    env = {"HEADWATER_NUM_PARTITIONS": "8", "HEADWATER_BOOTSTRAP_SERVERS": "x:1"}
    config = load_config(file=file, env=env, overrides=["log.retention.ms=2000"])
    assert config.broker_id == 3
    assert config["num.partitions"] == 8 and config.sources["num.partitions"].startswith("env")
    assert config.log_dirs == [Path("/data/a"), Path("/data/b")]
    assert config["log.retention.ms"] == 2000 and config.sources["log.retention.ms"] == "--set"
    assert config.log_config().retention_ms == 2000


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["num.partitions=0"],
            r"num.partitions='0' \(from --set\) is invalid: it must be at least 1",
        ),
        (["broker.id=x"], r"broker.id='x' \(from --set\) is invalid: it must be an integer"),
        (["auto.create.topics.enable=maybe"], "it must be true or false"),
        (["listeners=PLAINTEXT:9092"], "is not NAME://HOST:PORT"),
        (["listeners=PLAINTEXT://h:99999"], "port 99999 is over 65535"),
        (["log.retention.ms=-5"], "it must be at least -1"),
        (
            ["num.partition=3"],
            r"unknown setting 'num.partition' \(from --set\); did you mean num\.partitions",
        ),
        (["retention.ms=1"], "did you mean log.retention.ms"),
        (["broker.id"], "is not name=value"),
    ],
)
def test_bad_values_are_one_clear_line(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(env={}, overrides=["broker.id=1", *overrides])


def test_broker_id_is_required() -> None:
    with pytest.raises(ConfigError, match=r"broker.id is required: .*HEADWATER_BROKER_ID"):
        load_config(env={})


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(file=tmp_path / "missing.toml", env={})
    broken = tmp_path / "broken.toml"
    broken.write_text("broker.id = = 1\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(file=broken, env={})


def test_every_setting_has_a_doc_line_and_a_valid_default() -> None:
    names = [s.name for s in SETTINGS]
    assert len(names) == len(set(names))
    for setting in SETTINGS:
        assert setting.doc.endswith(".")
    load_config(env={}, overrides=["broker.id=0"])  # every default passes its own checks


def test_the_command_says_what_is_wrong_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [*BROKER, "--set", "broker.id=1", "--set", "num.partitions=-1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "headwater-broker: num.partitions='-1' (from --set) is invalid: it must be at least 1"
    ]
    checked = subprocess.run(
        [*BROKER, "--check", "--set", "broker.id=7"], capture_output=True, text=True, check=True
    )
    assert "broker.id=7  # --set" in checked.stdout
    assert "num.partitions=1  # default" in checked.stdout
