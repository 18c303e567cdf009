"""Jobs declared as files under ``config/jobs/``: created only where no job has their id."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from rest_consumer.errors import JobValidationError
from rest_consumer.store import JobStore

log = logging.getLogger(__name__)


@dataclass
class LoadReport:
    """What loading a directory of job files did, file by file."""

    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def load_job_files(store: JobStore, directory: Path) -> LoadReport:
    """Create the jobs of ``directory/*.json`` the store lacks; a bad file spares the rest."""
    report = LoadReport()
    if not directory.is_dir():
        log.info("no job directory at %s; nothing to load", directory)
        return report
    for path in sorted(directory.glob("*.json")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            job_id = doc.get("id") if isinstance(doc, dict) else None
            if not isinstance(job_id, str):
                raise JobValidationError([{"field": "id", "message": "is required"}])
            if store.create_if_absent(job_id, doc) is None:
                report.kept.append(path.name)
                log.info("job file %s: job %r already stored; the stored job wins", path.name,
                         job_id)
            else:
                report.created.append(path.name)
                log.info("job file %s: created job %r", path.name, job_id)
        except (OSError, ValueError, JobValidationError) as e:
            report.failed[path.name] = str(e)
            log.error("job file %s is invalid and was not loaded: %s", path.name, e)
    return report
