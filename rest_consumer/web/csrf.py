"""Cross-site request forgery: a browser sends the console's Basic credentials by itself, to
any request any page makes, so a state-changing request that comes from a browser must prove
it comes from the console.

Two checks, as Django makes them: the browser's own ``Origin`` / ``Sec-Fetch-Site`` headers
(a page cannot forge them) must say the request comes from this API's own origin, and the
request must carry the console's token in ``X-CSRF-Token`` (a custom header, which a
cross-site form cannot send and a cross-site script cannot without CORS, which the API never
grants). The token is per user: an HMAC of the user's name keyed by what only the server
holds for that user (the bootstrap admin's password, a stored user's password hash), so every
API process derives the same one, only a page served with that user's credentials shows it,
and one user's token is worth nothing with another's credentials.

Clients that are not browsers (curl, scripts: no ``Origin``, no ``Sec-Fetch-*``), and requests
authenticated with the bearer token (which no browser sends by itself), are not concerned.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

from flask import Request

from rest_consumer.web.authn import Principal

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
HEADER = "X-CSRF-Token"
BROWSER_HEADERS = ("Origin", "Sec-Fetch-Site", "Sec-Fetch-Mode")
SAME_ORIGIN = {"same-origin", "none"}
"""``Sec-Fetch-Site`` values of a request this origin's pages (or the user) made."""


def token(caller: Principal) -> str:
    """The console's token for this user: the same in every API process, unguessable
    without what the server holds for the user."""
    message = f"rest-consumer console csrf:{caller.name}".encode()
    return hmac.new(caller.csrf_key, message, hashlib.sha256).hexdigest()


def refusal(request: Request, caller: Principal) -> str | None:
    """Why this request must be refused as a possible forgery; None when it may go on."""
    if request.method in SAFE_METHODS or not _from_browser(request):
        return None
    if request.headers.get("Authorization", "").lower().startswith("bearer "):
        return None
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc != request.host:
        return f"cross-site request refused: it comes from {origin}, not from this API"
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in SAME_ORIGIN:
        return f"cross-site request refused: the browser says it comes from a {site} page"
    sent = request.headers.get(HEADER, "")
    if not caller.csrf_key or not hmac.compare_digest(sent.encode(),
                                                      token(caller).encode()):
        return (f"a browser's request that changes state needs the console's {HEADER} "
                "header (API clients outside a browser need none)")
    return None


def _from_browser(request: Request) -> bool:
    return any(name in request.headers for name in BROWSER_HEADERS)
