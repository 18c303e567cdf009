"""Jobs declared as files under ``config/jobs/``: created only where no job has their id."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from rest_consumer.core.errors import JobValidationError
from rest_consumer.state.store import JobStore

log = logging.getLogger(__name__)


def load_job_files(store: JobStore, directory: Path) -> None:
    """Create the jobs of ``directory/*.json`` the store lacks; a bad file spares the rest."""
    if not directory.is_dir():
        log.info("no job directory at %s; nothing to load", directory)
        return
    for path in sorted(directory.glob("*.json")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            job_id = doc.get("id") if isinstance(doc, dict) else None
            if not isinstance(job_id, str):
                raise JobValidationError([{"field": "id", "message": "is required"}])
            if store.create_if_absent(job_id, doc) is None:
                log.info("job file %s: job %r already stored; the stored job wins", path.name,
                         job_id)
            else:
                log.info("job file %s: created job %r", path.name, job_id)
        except (OSError, ValueError, JobValidationError) as e:
            log.error("job file %s is invalid and was not loaded: %s", path.name, e)
