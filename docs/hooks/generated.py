"""MkDocs hook: the reference tables generated from the code, so the pages cannot drift.

``<!-- generated: job-schema -->`` becomes a table of every field of ``job_schema.json`` (type,
default, limits, required); ``<!-- generated: routes -->`` a table of every route of the
OpenAPI document; ``<!-- generated: roles -->`` who may call each route, from the policy
table. A schema field that the page's hand-written table does not explain fails the build
(``mkdocs build --strict`` runs in ``make test``).
"""

from __future__ import annotations

import json
from typing import Any

from mkdocs.exceptions import PluginError

from rest_consumer.core.jobs import SCHEMA
from rest_consumer.web.openapi import openapi_document

LIMITS = ("minimum", "maximum", "exclusiveMinimum", "minLength", "maxLength", "minItems",
          "maxItems", "maxProperties", "pattern")


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    if "<!-- generated: job-schema -->" in markdown:
        _check_every_field_explained(markdown)
        markdown = markdown.replace("<!-- generated: job-schema -->", job_schema_table())
    if "<!-- generated: routes -->" in markdown:
        markdown = markdown.replace("<!-- generated: routes -->", routes_table())
    if "<!-- generated: roles -->" in markdown:
        markdown = markdown.replace("<!-- generated: roles -->", roles_table())
    return markdown


def job_schema_table() -> str:
    required = set(SCHEMA.get("required", []))
    rows = ["| field | type | default | limits | required |", "|---|---|---|---|---|"]
    for name, spec in SCHEMA["properties"].items():
        rows.append(f"| `{name}` | {_type(spec)} | {_code(spec.get('default'))} | "
                    f"{_limits(spec)} | {'yes' if name in required else ''} |")
    return "\n".join(rows)


def routes_table() -> str:
    rows = ["| method | path | what it does |", "|---|---|---|"]
    for path, operations in openapi_document()["paths"].items():
        for method, operation in operations.items():
            if isinstance(operation, dict) and "summary" in operation:
                rows.append(f"| `{method.upper()}` | `{path}` | {operation['summary']} |")
    return "\n".join(rows)


def roles_table() -> str:
    """Every route with who may call it, as the API's own policy table says."""
    from flask import Flask

    from rest_consumer.web.app import routes
    from rest_consumer.web.console import console
    from rest_consumer.web.operations import operations
    from rest_consumer.web.policy import ROLES_ALLOWED, rule_for
    from rest_consumer.web.users import users

    app = Flask("docs")
    for blueprint in (routes, operations, console, users):
        app.register_blueprint(blueprint)
    scopes = {"job": "the job's owner must be theirs (else 404)",
              "owner": "the owner must be theirs (else 404)",
              "list": "shows only their owners' jobs", "none": ""}
    rows = ["| method | path | who may | scope |", "|---|---|---|---|"]
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        found = rule_for(rule.endpoint)
        if found is None or rule.endpoint.endswith("static"):
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            rows.append(f"| `{method}` | `{rule.rule}` | {ROLES_ALLOWED[found.action]} | "
                        f"{scopes[found.scope]} |")
    return "\n".join(rows)


def _check_every_field_explained(markdown: str) -> None:
    missing = [name for name in SCHEMA["properties"] if f"`{name}`" not in markdown]
    if missing:
        raise PluginError(f"jobs.md does not explain the schema's fields: {', '.join(missing)}")


def _type(spec: dict[str, Any]) -> str:
    if "enum" in spec:
        return " \\| ".join(f"`{v}`" for v in spec["enum"])
    kind = spec.get("type", "any")
    if kind == "array" and "type" in spec.get("items", {}):
        return f"array of {spec['items']['type']}"
    return str(kind)


def _limits(spec: dict[str, Any]) -> str:
    parts = [f"{key} {_code(spec[key])}" for key in LIMITS if key in spec]
    return ", ".join(parts).replace("|", "\\|")


def _code(value: Any) -> str:
    return "" if value is None else "`" + json.dumps(value).replace("|", "\\|") + "`"
