"""The reader process: one thread per job consuming Kafka, batching and ordering messages,
dispatching ``deliver`` tasks, committing offsets once records are final (``manager`` owns
the threads)."""
