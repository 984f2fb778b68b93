"""deploy/: no container engine runs here, so the compose file and the Dockerfile are
checked statically against what the broker actually accepts."""

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from broker.config import SETTINGS, load_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return data


def _brokers(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items() if n.startswith("broker-")}


def test_zookeeper_and_three_brokers_with_volumes_and_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"zookeeper", "broker-1", "broker-2", "broker-3"}
    assert "healthcheck" in services["zookeeper"]
    for name, service in _brokers(compose).items():
        assert service["depends_on"]["zookeeper"]["condition"] == "service_healthy", name
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        (volume,) = service["volumes"]
        source, target = volume.split(":")
        assert source in compose["volumes"], name
        assert target == service["environment"]["HEADWATER_LOG_DIRS"]
    assert "HEALTHCHECK" in (DEPLOY / "Dockerfile").read_text()


def test_every_environment_name_is_a_broker_setting_and_validates(
    compose: dict[str, Any],
) -> None:
    known = {"HEADWATER_" + s.name.upper().replace(".", "_") for s in SETTINGS}
    ids = set()
    for name, service in _brokers(compose).items():
        env = {k: str(v) for k, v in service["environment"].items()}
        unknown = set(env) - known
        assert not unknown, f"{name}: not broker settings: {unknown}"
        config = load_config(env=env)  # raises ConfigError with one line if anything is off
        ids.add(config.broker_id)
        assert config["zookeeper.connect"].split(":")[0] in compose["services"]
        assert config["default.replication.factor"] == 3
        assert config["min.insync.replicas"] == 2


def test_advertised_addresses_are_reachable_where_they_are_advertised(
    compose: dict[str, Any],
) -> None:
    for name, service in _brokers(compose).items():
        env = service["environment"]
        config = load_config(env={k: str(v) for k, v in env.items()})
        listen_port = int(config["listeners"][0].rsplit(":", 1)[1])
        advertised = re.match(r"PLAINTEXT://([^:]+):(\d+)$", config.advertised_listeners[0])
        assert advertised is not None
        host, port = advertised[1], int(advertised[2])
        assert host == service["hostname"] == name  # resolvable inside the network
        assert port == listen_port  # other brokers dial the same port
        assert f"{port}:{listen_port}" in service["ports"]  # and the host, with /etc/hosts
        # Kafka's own clients: the second listener, advertised and published the same way
        assert config.kafka_protocol_listeners == {"KAFKA"}
        kafka_port = int(config["listeners"][1].rsplit(":", 1)[1])
        assert config.advertised_listeners[1] == f"KAFKA://{name}:{kafka_port}"
        assert f"{kafka_port}:{kafka_port}" in service["ports"]


def test_the_dockerfile_installs_this_package_and_runs_the_broker() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = project["tool"]["setuptools"]["packages"]["find"]["include"]
    for package in packages:
        name = package.rstrip("*")
        assert f"COPY {name} ./{name}" in text, f"the image lacks {name}/"
        assert (ROOT / name).is_dir()
    assert 'ENTRYPOINT ["headwater-broker"]' in text
    # the extras asked for (--build-arg EXTRAS=gssapi) are installed, none by default
    assert 'ARG EXTRAS=""' in text
    assert 'pip install ".${EXTRAS:+[$EXTRAS]}"' in text
    assert "gssapi" in project["project"]["optional-dependencies"]
    assert "headwater-broker" in project["project"]["scripts"]
    assert "STOPSIGNAL SIGTERM" in text
    for line in text.splitlines():
        if line.startswith("ENV ") or line.startswith("    HEADWATER_"):
            for key in re.findall(r"(HEADWATER_[A-Z_]+)=", line):
                assert key in {"HEADWATER_" + s.name.upper().replace(".", "_") for s in SETTINGS}, (
                    key
                )
