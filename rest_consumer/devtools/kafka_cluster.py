"""Kafka as production runs it, on loopback, from the project's own jars: a broker that
takes clients only over SASL_SSL (SCRAM, a certificate made on the fly with the JDK's
``keytool``), and a 3-node KRaft cluster (replication factor 3, ``min.insync.replicas=2``).
For the tests (``tests/test_kafka_security.py``) and ``topology/run``."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from pathlib import Path

from rest_consumer.core.errors import ServiceError
from rest_consumer.devtools.services import KafkaBroker, free_port, new_cluster_id

SCRAM = "SCRAM-SHA-512"


def make_certificate(folder: Path, password: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost: the broker's PKCS#12 keystore,
    and the certificate as PEM, which clients trust (``ssl.ca.location``)."""
    keytool = shutil.which("keytool")
    if keytool is None:
        raise ServiceError("keytool not found: it comes with the JDK (Java 17)")
    folder.mkdir(parents=True, exist_ok=True)
    keystore, pem = folder / "broker.p12", folder / "ca.pem"
    for argv in (
        [keytool, "-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048",
         "-dname", "CN=localhost", "-ext", "SAN=IP:127.0.0.1,DNS:localhost", "-validity", "30",
         "-storetype", "PKCS12", "-keystore", str(keystore), "-storepass", password,
         "-keypass", password],
        [keytool, "-exportcert", "-rfc", "-alias", "broker", "-keystore", str(keystore),
         "-storepass", password, "-file", str(pem)],
    ):
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ServiceError(f"keytool failed: {result.stdout}{result.stderr}")
    return keystore, pem


class SecureKafkaBroker(KafkaBroker):
    """Clients over SASL_SSL only (SCRAM-SHA-512, one user); the controller and the broker's
    own listener stay on loopback plaintext, as a single node needs no inter-broker TLS."""

    def __init__(self, workdir: Path, user: str = "rest-consumer") -> None:
        super().__init__(workdir)
        self.internal_port = free_port()
        self.user = user
        self.password = secrets.token_urlsafe(18)
        self._store_password = secrets.token_urlsafe(18)
        self.keystore, self.ca = make_certificate(workdir / "tls", self._store_password)

    def client_config(self) -> dict[str, str]:
        return {"bootstrap.servers": self.bootstrap_servers, "security.protocol": "SASL_SSL",
                "sasl.mechanism": SCRAM, "sasl.username": self.user,
                "sasl.password": self.password, "ssl.ca.location": str(self.ca)}

    def env(self) -> dict[str, str]:
        """The same, as rest-consumer's ``KAFKA_*`` environment variables."""
        return {f"KAFKA_{key.upper().replace('.', '_')}": value
                for key, value in self.client_config().items()}

    def _listener_lines(self) -> list[str]:
        return [
            f"listeners=SASL_SSL://127.0.0.1:{self.port},"
            f"INTERNAL://127.0.0.1:{self.internal_port},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners=SASL_SSL://127.0.0.1:{self.port},"
            f"INTERNAL://127.0.0.1:{self.internal_port}",
            "inter.broker.listener.name=INTERNAL",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,"
            "SASL_SSL:SASL_SSL",
            f"sasl.enabled.mechanisms={SCRAM}",
            f"listener.name.sasl_ssl.{SCRAM.lower()}.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            f"ssl.keystore.location={self.keystore}", "ssl.keystore.type=PKCS12",
            f"ssl.keystore.password={self._store_password}",
            f"ssl.key.password={self._store_password}",
        ]

    def _format_extra(self) -> list[str]:
        """The user's SCRAM credentials go into the cluster metadata at format time."""
        return ["--add-scram", f"{SCRAM}=[name={self.user},password={self.password}]"]


class KafkaCluster:
    """Three combined broker+controller nodes: replication factor 3, min.insync.replicas 2."""

    def __init__(self, workdir: Path, partitions: int = 1) -> None:
        controller_ports = [free_port() for _ in range(3)]
        voters = ",".join(f"{n + 1}@127.0.0.1:{port}" for n, port in enumerate(controller_ports))
        cluster_id = new_cluster_id()
        self.nodes = [KafkaBroker(workdir / f"kafka{n + 1}", partitions=partitions,
                                  node_id=n + 1, voters=voters, cluster_id=cluster_id,
                                  replication=3, controller_port=port)
                      for n, port in enumerate(controller_ports)]

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(node.bootstrap_servers for node in self.nodes)

    def start(self) -> KafkaCluster:
        for node in self.nodes:
            node.launch()
        for node in self.nodes:
            node.wait_ready()
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
