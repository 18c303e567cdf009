"""Who may do what, for every route, from one table (``POLICY``) and one hook (``authorize``).

Each endpoint has a rule: an *action* (``public``, ``read``, ``change``, ``admin``) that the
caller's role must allow (viewer: read; editor: read and change; admin: everything), and a
*scope*: ``job`` (the route names a job: one of another owner's is ``404``, as if it did not
exist), ``owner`` (the route names an owner: another's is ``404``), ``list`` (the handler shows
only what ``visible`` keeps) or ``none``. Saving a job with an owner the caller does not have
is ``403``. An endpoint without a rule is refused (``500``), so a new route cannot slip past:
``tests/test_policy.py`` walks every route against every role from this table.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from flask import Response, current_app, g, jsonify, request
from werkzeug.exceptions import Forbidden, NotFound

from rest_consumer.core.errors import JobNotFound
from rest_consumer.web import csrf
from rest_consumer.web.authn import Authenticator, Principal, Refused

log = logging.getLogger(__name__)

Action = Literal["public", "read", "change", "admin"]
Scope = Literal["none", "job", "owner", "list"]


@dataclass(frozen=True)
class Rule:
    action: Action
    scope: Scope = "none"


POLICY: dict[str, Rule] = {
    "routes.healthz": Rule("public"),
    "routes.readyz": Rule("public"),
    "routes.list_jobs": Rule("read", "list"),
    "routes.list_owner_jobs": Rule("read", "owner"),
    "routes.get_job": Rule("read", "job"),
    "routes.upsert_job": Rule("change", "job"),
    "routes.delete_job": Rule("change", "job"),
    "routes.start_job": Rule("change", "job"),
    "routes.stop_job": Rule("change", "job"),
    "routes.job_schema": Rule("read"),
    "routes.prometheus_metrics": Rule("read", "list"),
    "routes.openapi": Rule("read"),
    "operations.status": Rule("read", "job"),
    "operations.list_dead_letters": Rule("read", "job"),
    "operations.replay_dead_letters": Rule("change", "job"),
    "operations.purge_dead_letters": Rule("change", "job"),
    "operations.preview": Rule("read", "job"),
    "operations.set_offset": Rule("change", "job"),
    "console.jobs_page": Rule("read", "list"),
    "console.job_page": Rule("read", "job"),
    "console.job_rows": Rule("read", "list"),
    "console.static": Rule("read"),
    "static": Rule("read"),
    "users.list_users": Rule("admin"),
    "users.upsert_user": Rule("admin"),
    "users.delete_user": Rule("admin"),
    "users.new_token": Rule("admin"),
    "users.audit": Rule("admin"),
}
UNROUTED = Rule("read")
"""A path no route serves: 404 or 405, once the caller is known."""
ROLES_ALLOWED = {"public": "anyone", "read": "viewer, editor, admin", "change": "editor, admin",
                 "admin": "admin"}


def rule_for(endpoint: str | None) -> Rule | None:
    return UNROUTED if endpoint is None else POLICY.get(endpoint)


def principal() -> Principal:
    """The caller of the request being served (``authorize`` ran)."""
    found: Principal = g.principal
    return found


def visible(jobs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The jobs the caller may see."""
    caller = principal()
    return [job for job in jobs if caller.sees(job.get("owner"))]


def authorize() -> Any:
    """``before_request``: authenticate, then apply the endpoint's rule (None: go on)."""
    rule = rule_for(request.endpoint)
    if rule is None:
        log.error("no policy for endpoint %s: refused", request.endpoint)
        return jsonify(error="internal error", details="this route has no policy"), 500
    if rule.action == "public":
        return None
    found = _authenticator().check(request.headers.get("Authorization", ""),
                                   request.remote_addr or "",
                                   metrics=request.endpoint == "routes.prometheus_metrics")
    if isinstance(found, Refused):
        return _refused(found)
    g.principal = found
    if not found.may(rule.action):
        raise Forbidden(f"a {found.role} may not do this")
    _check_scope(found, rule)
    if (problem := csrf.refusal(request, found)) is not None:
        log.warning("refused %s %s: %s", request.method, request.path, problem)
        return jsonify(error="forbidden", details=problem), 403
    return None


def _check_scope(caller: Principal, rule: Rule) -> None:
    args = request.view_args or {}
    if rule.scope == "owner" and not caller.sees(args.get("owner")):
        raise NotFound(f"no jobs of owner {args.get('owner')!r}")
    if rule.scope != "job" or caller.owners is None:
        return
    job_id = str(args.get("job_id"))
    store = current_app.extensions["rest_consumer"]["store"]
    store.ensure_loaded()  # after Redis lost its data, a job's owner is known again first
    stored = store.find(job_id)
    if stored is not None and not caller.sees(stored.get("owner")):
        raise JobNotFound(job_id)
    if request.endpoint == "routes.upsert_job":
        body = request.get_json(silent=True)
        owner = body.get("owner") if isinstance(body, dict) else None
        if isinstance(owner, str) and not caller.sees(owner):
            raise Forbidden(f"you may not set owner {owner!r}")


def _refused(refused: Refused) -> tuple[Response, int, dict[str, str]]:
    if refused.status == 429:
        body = jsonify(error="too many requests",
                       details="too many failed logins; try again later")
        return body, 429, {"Retry-After": str(refused.retry_after)}
    body = jsonify(error="unauthorized", details="credentials are required")
    return body, 401, {"WWW-Authenticate": 'Basic realm="rest-consumer"'}


def _authenticator() -> Authenticator:
    found: Authenticator = current_app.extensions["rest_consumer"]["authenticator"]
    return found
