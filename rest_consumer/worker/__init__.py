"""The worker process: the ``deliver`` task (``task``), claiming it, decoding and mapping its
records (``execution``), sending them on lanes within the job's permits, HTTP/1.1, OAuth2,
and recording outcomes."""
