"""Local services for ``rest-consumer dev``, the tests and the benchmarks: Kafka, Redis,
Sentinel groups and clusters started from the project's own files, and a demo producer."""
