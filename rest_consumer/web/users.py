"""API routes for admins: the users (``state.users``) and the audit trail (``state.audit``).
Who may call them is ``policy``'s business (``admin``), as for every route."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import BadRequest

from rest_consumer.state.audit import AuditLog
from rest_consumer.state.users import UserStore
from rest_consumer.web.operations import json_body
from rest_consumer.web.policy import principal

users = Blueprint("users", __name__)

MAX_AUDIT_PAGE = 1000


def _users() -> UserStore:
    found: UserStore = current_app.extensions["rest_consumer"]["users"]
    found.ensure_loaded()
    return found


def audit_log() -> AuditLog:
    found: AuditLog = current_app.extensions["rest_consumer"]["audit"]
    return found


@users.get("/users")
def list_users() -> Response:
    return jsonify([user.shown() for user in _users().list()])


@users.post("/user/<name>")
def upsert_user(name: str) -> tuple[Response, int]:
    user, created = _users().upsert(name, json_body(), by=principal().name)
    return jsonify(user.shown()), 201 if created else 200


@users.delete("/user/<name>")
def delete_user(name: str) -> Response:
    _users().delete(name)
    return jsonify(name=name, deleted=True)


@users.post("/user/<name>/token")
def new_token(name: str) -> Response:
    """A new bearer token, shown this once: only its hash is kept."""
    token = _users().new_token(name, by=principal().name)
    return jsonify(name=name, token=token)


@users.get("/audit")
def audit() -> Response:
    """The newest audit records (of one job with ``?job=``, one user with ``?user=``)."""
    try:
        limit = min(int(request.args.get("limit", 100)), MAX_AUDIT_PAGE)
    except ValueError as e:
        raise BadRequest("limit must be a number") from e
    records: list[dict[str, Any]] = audit_log().read(request.args.get("job"),
                                                     request.args.get("user"), max(limit, 1))
    return jsonify(records)
