"""Where state lives and how it is named: the job store and control messages on Redis, the
jobs, dead-letter and log topics on Kafka, outstanding records, heartbeats, seeks, retries,
throughput and endpoint health."""
