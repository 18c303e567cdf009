"""docker-compose.yml parses, validates against the Compose Specification, and is complete."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator

REPO = Path(__file__).resolve().parent.parent


def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_the_compose_file_validates_against_the_compose_specification() -> None:
    schema = json.loads((REPO / "deploy" / "compose-spec.json").read_text())
    errors = sorted(Draft7Validator(schema).iter_errors(compose()), key=str)
    assert errors == []


def test_it_runs_every_piece_as_the_design_names_it() -> None:
    services = compose()["services"]
    assert set(services) == {"kafka", "redis", "api", "reader", "worker", "flower"}
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "--appendonly" in services["redis"]["command"]
    assert services["worker"]["command"][0] == "worker" and "ports" not in services["worker"]
    assert "container_name" not in services["worker"]  # so --scale worker=N works
    for name in ("kafka", "redis", "api"):
        assert "healthcheck" in services[name], name
    for name in ("api", "reader", "worker", "flower"):
        assert services[name]["env_file"] == "deploy/rest-consumer.env"
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_flower_has_basic_auth_and_the_env_example_sets_every_credential() -> None:
    example = (REPO / "deploy" / "rest-consumer.env.example").read_text()
    for name in ("API_USER", "API_PASSWORD", "FLOWER_BASIC_AUTH", "REDIS_URL",
                 "KAFKA_BOOTSTRAP_SERVERS"):
        assert f"\n{name}=" in example, name
    ports = compose()["services"]["flower"]["ports"]
    assert all(p.startswith("127.0.0.1:") for p in ports)
