"""Settings from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from rest_consumer.core import config
from rest_consumer.core.errors import ConfigError


def test_defaults_follow_the_design(tmp_path: Path) -> None:
    s = config.from_env({}, dotenv=tmp_path / "none")
    assert s.redis_url == "redis://127.0.0.1:6379/0" == s.broker_url()
    assert s.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert (s.api_host, s.api_port) == ("127.0.0.1", 9013)
    assert s.consumer_group_prefix == "rest-consumer"
    assert s.redispatch_after > s.visibility_timeout


def test_kafka_variables_become_librdkafka_settings(tmp_path: Path) -> None:
    s = config.from_env({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "PLAIN",
                         "KAFKA_BOOTSTRAP_SERVERS": "k:9"}, dotenv=tmp_path / "none")
    assert s.kafka_client_config() == {"bootstrap.servers": "k:9", "security.protocol": "SASL_SSL",
                                       "sasl.mechanism": "PLAIN"}


def test_a_bad_value_names_its_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="API_PORT"):
        config.from_env({"API_PORT": "eighty"}, dotenv=tmp_path / "none")
    with pytest.raises(ConfigError, match="LOG_FORMAT"):
        config.from_env({"LOG_FORMAT": "xml"}, dotenv=tmp_path / "none")


def test_the_environment_wins_over_a_dotenv_file(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("# comment\nREDIS_URL=redis://from-file:1/0\nAPI_USER='bob'\n")
    s = config.from_env({"REDIS_URL": "redis://from-env:2/0"}, dotenv=dotenv)
    assert s.redis_url == "redis://from-env:2/0"
    assert s.api_user == "bob"
