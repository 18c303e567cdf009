"""rest-consumer: deliver Aether records from Apache Kafka to REST endpoints."""

__version__ = "0.1.0"
