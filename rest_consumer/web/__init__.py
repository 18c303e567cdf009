"""The API process: the Flask app (``app``), job operations, the console, CSRF, OpenAPI,
status and Prometheus metrics."""
