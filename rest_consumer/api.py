"""The API's application factory, for ``flask --app rest_consumer.api`` and WSGI servers.

A thin door: the app lives in ``rest_consumer.web.app``.
"""

from rest_consumer.web.app import create_app

__all__ = ["create_app"]
