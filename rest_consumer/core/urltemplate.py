"""URL templates whose values can never change the scheme, host or port.

A placeholder may sit in the host only as (part of) a label and takes label characters
(``[A-Za-z0-9-]``); it takes several labels (``a.b``) only where the template puts it before
``.`` and a literal parent domain (``https://{tenant}.partner.example/``). Scheme, port and
userinfo are never templated; a host needs a literal part. In the path, query and fragment
every value is percent-encoded, and a path segment may not become ``.`` or ``..``.
"""

from __future__ import annotations

import functools
import json
import re
import string
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from publicsuffixlist import PublicSuffixList

from rest_consumer.core.errors import MappingError

_LABEL = "[A-Za-z0-9-]+"
_LABELS = rf"{_LABEL}(?:\.{_LABEL})*"
_ABSENT = object()


class TemplateError(ValueError):
    """Raised when a URL template is malformed or puts a placeholder where none may be."""


@dataclass(frozen=True)
class _Piece:
    literal: str
    key: str | None
    part: str  # "host", "path", "query" or "fragment"
    multi_label: bool = False


@dataclass(frozen=True)
class UrlTemplate:
    """A compiled URL template; :meth:`fill` builds URLs that stay on the template's host."""

    pieces: tuple[_Piece, ...]
    host_pattern: re.Pattern[str]
    templated_host: bool

    @classmethod
    def compile(cls, template: str) -> UrlTemplate:
        scheme, sep, after = template.partition("://")
        if not sep or scheme.lower() not in ("http", "https"):
            raise TemplateError("must be an absolute http:// or https:// URL")
        end = min((i for i in (after.find(c) for c in "/?#") if i != -1), default=len(after))
        authority, rest = after[:end], after[end:]
        host_pieces, pattern = _host_pieces(authority)
        pieces = [_Piece(scheme + sep, None, "scheme"), *host_pieces, *_rest_pieces(rest)]
        return cls(tuple(pieces), pattern, any(p.key is not None for p in host_pieces))

    def keys(self) -> list[str]:
        return [p.key for p in self.pieces if p.key is not None]

    def fill(self, values: dict[str, Any]) -> str:
        """The URL for one record; MappingError when a value does not fit its place.

        The filled URL is parsed again (``_check``) when the host has a placeholder or a path
        value is made of dots only. Otherwise it cannot have left the template's shape: every
        other value is percent-encoded with nothing kept but unreserved characters, so it can
        make no ``/ ? # @ :`` to reach the authority, and only dots make a dot segment.
        """
        out = []
        recheck = self.templated_host
        for piece in self.pieces:
            out.append(piece.literal)
            if piece.key is None:
                continue
            value = values.get(piece.key, _ABSENT)
            if value is _ABSENT:
                raise MappingError(f"url placeholder {{{piece.key}}} has no value in this record")
            encoded = _encode(piece, template_text(value))
            recheck = recheck or (piece.part == "path" and not encoded.strip("."))
            out.append(encoded)
        url = "".join(out)
        if recheck:
            self._check(url)
        return url

    def _check(self, url: str) -> None:
        """Belt and braces: the filled URL keeps the template's host and has no dot segment."""
        try:
            parts = urlsplit(url)
        except ValueError as e:
            raise MappingError(f"the filled URL is malformed: {e}") from e
        if not self.host_pattern.fullmatch(parts.netloc):
            raise MappingError("the filled URL's host no longer matches the template's host")
        if any(unquote(s) in (".", "..") for s in parts.path.split("/")):
            raise MappingError("a url placeholder made a '.' or '..' path segment")


def _host_pieces(authority: str) -> tuple[list[_Piece], re.Pattern[str]]:
    if "@" in authority:
        raise TemplateError("credentials in the URL are refused; use basic_auth, token or "
                            "secret_headers")
    host, port = authority, ""
    if not authority.endswith("]") and ":" in authority:
        host, _, port = authority.rpartition(":")
        if not port.isdigit():
            raise TemplateError("the port must be a literal number (a placeholder may not set "
                                "the port)")
    if not host:
        raise TemplateError("must name a host")
    parsed = _parse(host)
    if all(key is None for _, key in parsed):
        return [_Piece(authority, None, "host")], re.compile(re.escape(authority), re.I)
    if "[" in host:
        raise TemplateError("a placeholder may not be part of an IP literal host")
    if not any(literal for literal, _ in parsed):
        raise TemplateError("a placeholder may not be the whole host: the host needs a "
                            "literal part, or a Kafka value would choose where requests go")
    _require_registrable_domain(parsed[-1][0])
    pieces, regex = [], ""
    for i, (literal, key) in enumerate(parsed):
        regex += re.escape(literal)
        if key is None:
            continue
        following = parsed[i + 1][0] if i + 1 < len(parsed) else ""
        starts_label = literal == "" or literal.endswith(".")
        multi = (starts_label and following.startswith(".") and len(following) > 1
                 and i + 2 == len(parsed))
        pieces.append(_Piece(literal, key, "host", multi))
        regex += _LABELS if multi else _LABEL
    pieces.append(_Piece(parsed[-1][0] + (f":{port}" if port else ""), None, "host"))
    return pieces, re.compile(regex + (f":{port}" if port else ""), re.I)


@functools.cache
def _public_suffixes() -> PublicSuffixList:
    """The public suffix list the package ships (read once; never fetched at run time)."""
    return PublicSuffixList()


def _require_registrable_domain(tail: str) -> None:
    """What follows a host's last placeholder must hold a registrable domain of its own
    (``{tenant}.partner.example``), so Kafka data picks a name under it, never the domain:
    ``{a}.com``, ``{a}.co.uk`` and ``{a}.{b}`` are refused. Names under ``localhost`` are
    loopback by definition (RFC 6761), so ``{a}.localhost`` stays there."""
    domain = tail.partition(".")[2].lower().rstrip(".")
    if domain == "localhost":
        return
    if not domain or _public_suffixes().privatesuffix(domain) is None:
        raise TemplateError(
            "a placeholder in the host must be followed by a literal registrable domain "
            "(e.g. {tenant}.partner.example), or Kafka data would choose the domain that "
            f"receives the job's credentials; {domain or 'nothing'!r} is a public suffix")


def _parse(text: str) -> list[tuple[str, str | None]]:
    try:
        parsed = [(literal, name) for literal, name, _, _ in string.Formatter().parse(text)]
    except ValueError as e:
        raise TemplateError(f"malformed template: {e}") from e
    if not parsed or parsed[-1][1] is not None:
        parsed.append(("", None))
    return parsed


def _rest_pieces(rest: str) -> list[_Piece]:
    pieces, seen = [], ""
    for literal, key in _parse(rest):
        seen += literal
        part = "fragment" if "#" in seen else "query" if "?" in seen else "path"
        pieces.append(_Piece(literal, key, part))
    for segment in rest.partition("?")[0].partition("#")[0].split("/"):
        if segment in (".", ".."):
            raise TemplateError("the path may not hold '.' or '..' segments")
    return pieces


def _encode(piece: _Piece, text: str) -> str:
    if piece.part == "host":
        if not re.fullmatch(_LABELS if piece.multi_label else _LABEL, text):
            what = "host labels" if piece.multi_label else "a host label"
            raise MappingError(f"url placeholder {{{piece.key}}} must be {what} (letters, "
                               f"digits, '-'), got {_shown(text)}")
        return text
    return quote(text, safe="")


def _shown(text: str) -> str:
    """A value as shown in a reason: quoted and cut, since it comes from the data."""
    return repr(text[:60] + ("…" if len(text) > 60 else ""))


def template_text(value: Any) -> str:
    """A datamap value as template text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(template_text(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)
