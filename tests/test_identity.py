"""Identity toward endpoints: signed requests (verified with the ``standardwebhooks`` package,
and GitHub-style with ``hmac``) and per-job TLS (a private CA, mutual TLS) against a real TLS
server on loopback with certificates the test makes (``trustme``)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
import trustme
from endpoint import RecordingEndpoint
from flask.testing import FlaskClient
from standardwebhooks import Webhook
from test_hostile_data import _sample_queues
from test_pipeline import committed

from conftest import LOOPBACK, valid_job
from helpers import wait_for
from rest_consumer.core.config import Settings
from rest_consumer.core.destinations import DestinationGuard
from rest_consumer.core.errors import PermanentDeliveryError, RetryableDeliveryError
from rest_consumer.core.mapping import RequestSpec
from rest_consumer.core.signing import Signer
from rest_consumer.core.tls import TlsIdentity, expiry_report
from rest_consumer.state.store import JobStore
from rest_consumer.web.app import create_app
from rest_consumer.worker.delivery import Sender

AUTH = {"Authorization": "Bearer tok-0123456789abcdef"}
WHSEC = "whsec_" + base64.b64encode(b"k" * 32).decode()
WHSEC_OLD = "whsec_" + base64.b64encode(b"o" * 32).decode()
HMAC_SECRET = "github-style-secret-0123456789"


def test_a_standard_webhooks_signature_verifies_with_the_reference_library() -> None:
    signer = Signer.from_job({"scheme": "standard-webhooks", "secret": WHSEC})
    assert signer is not None
    body = b'{"id": "p1", "name": "Am\xc3\xadna"}'
    headers = signer.headers("people:t:0:7:0", body)
    assert headers["webhook-id"] == "people:t:0:7:0"
    Webhook(WHSEC).verify(body, headers)  # raises WebhookVerificationError when it does not


def test_during_a_rotation_both_signatures_are_sent_and_each_verifies() -> None:
    signer = Signer.from_job({"scheme": "standard-webhooks", "secret": WHSEC,
                              "previous_secret": WHSEC_OLD})
    assert signer is not None
    headers = signer.headers("id-1", b"[]")
    assert headers["webhook-signature"].count("v1,") == 2
    Webhook(WHSEC).verify(b"[]", headers)
    Webhook(WHSEC_OLD).verify(b"[]", headers)


def test_a_github_style_signature_is_the_hex_hmac_of_the_exact_body() -> None:
    signer = Signer.from_job({"scheme": "hmac-sha256", "secret": HMAC_SECRET})
    assert signer is not None
    body = b'{"a": 1}'
    expected = "sha256=" + hmac.new(HMAC_SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert signer.headers("ignored", body) == {"X-Hub-Signature-256": expected}
    custom = Signer.from_job({"scheme": "hmac-sha256", "secret": HMAC_SECRET,
                              "header": "X-Signature", "prefix": ""})
    assert custom is not None
    assert custom.headers("x", body) == {"X-Signature": expected[len("sha256="):]}


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def client_cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("rest-consumer-client")


def pem(blob: Any) -> str:
    return str(blob.bytes().decode())


def mtls(ca: trustme.CA, leaf: trustme.LeafCert) -> dict[str, str]:
    return {"ca": pem(ca.cert_pem), "client_cert": pem(leaf.cert_chain_pems[0]),
            "client_key": pem(leaf.private_key_pem)}


class TlsEndpoint(RecordingEndpoint):
    """The recording endpoint behind TLS: its certificate from ``ca``, asking for a client
    certificate from ``client_ca`` when given. ``handshakes_failed`` counts refusals."""

    def __init__(self, ca: trustme.CA, client_ca: trustme.CA | None = None) -> None:
        super().__init__()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
        if client_ca is not None:
            client_ca.configure_trust(context)
            context.verify_mode = ssl.CERT_REQUIRED
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)

    @property
    def url(self) -> str:
        return f"https://localhost:{self.server.server_address[1]}"


@pytest.fixture
def mtls_endpoint(ca: trustme.CA) -> Iterator[TlsEndpoint]:
    server = TlsEndpoint(ca, client_ca=ca).start()
    yield server
    server.stop()


def post(sender: Sender, url: str, tls: TlsIdentity | None) -> int:
    request = RequestSpec("POST", url + "/p/1", {"Content-Type": "application/json"}, b"{}")
    return sender.send(request, 5, frozenset({503}), tls)


def test_mutual_tls_with_a_private_ca_reaches_the_endpoint(
        ca: trustme.CA, client_cert: trustme.LeafCert, mtls_endpoint: TlsEndpoint) -> None:
    sender = Sender(DestinationGuard(LOOPBACK))
    assert post(sender, mtls_endpoint.url, TlsIdentity.from_job(mtls(ca, client_cert))) == 200
    assert [r.path for r in mtls_endpoint.received] == ["/p/1"]


def test_without_the_client_certificate_the_request_is_refused(
        ca: trustme.CA, mtls_endpoint: TlsEndpoint) -> None:
    # The server's alert, or (when its close resets the connection first) an EOF: either
    # names TLS; the pipeline test below sees the record end as a dead letter.
    sender = Sender(DestinationGuard(LOOPBACK))
    with pytest.raises((PermanentDeliveryError, RetryableDeliveryError), match="TLS"):
        post(sender, mtls_endpoint.url, TlsIdentity.from_job({"ca": pem(ca.cert_pem)}))
    assert mtls_endpoint.received == [] and mtls_endpoint.failed == []


def test_an_untrusted_server_receives_nothing(client_cert: trustme.LeafCert,
                                              ca: trustme.CA) -> None:
    stranger = TlsEndpoint(trustme.CA()).start()  # a certificate from a CA nobody trusts
    try:
        sender = Sender(DestinationGuard(LOOPBACK))
        with pytest.raises(PermanentDeliveryError, match="certificate verify failed"):
            post(sender, stranger.url, TlsIdentity.from_job(mtls(ca, client_cert)))
        assert stranger.received == [] and stranger.failed == []
    finally:
        stranger.stop()


@pytest.fixture
def api(settings: Settings, real_redis: redis.Redis) -> FlaskClient:
    real_redis.flushdb()
    return create_app(settings, store=JobStore(real_redis, LOOPBACK),
                      kafka_ready=lambda: None).test_client()


def expired_cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("old-client", not_after=datetime.now(UTC) - timedelta(days=1))


@pytest.mark.parametrize(("tls", "field"), [
    ({"ca": "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"}, "tls.ca"),
    ({"client_cert": "nonsense", "client_key": "nonsense"}, "tls.client_cert"),
    ("mismatched", "tls.client_key"),
    ("expired", "tls.client_cert"),
    ({"verify": False}, "tls.verify"),
    ({"ca": "x", "check_hostname": False}, "tls.check_hostname"),
], ids=["unreadable CA", "unreadable certificate", "key of another certificate",
        "expired certificate", "verify false", "host checks off"])
def test_a_bad_tls_identity_is_a_400_naming_the_field(api: FlaskClient, ca: trustme.CA,
                                                      client_cert: trustme.LeafCert,
                                                      tls: Any, field: str) -> None:
    if tls == "mismatched":
        other = ca.issue_cert("someone-else")
        tls = {**mtls(ca, client_cert), "client_key": pem(other.private_key_pem)}
    elif tls == "expired":
        tls = mtls(ca, expired_cert(ca))
    answer = api.post("/job/people", json=valid_job(tls=tls), headers=AUTH)
    assert answer.status_code == 400
    assert field in [p["field"] for p in answer.json["details"]], answer.json
    assert "PRIVATE KEY" not in answer.get_data(as_text=True)


@pytest.mark.parametrize(("signing", "field"), [
    ({"scheme": "standard-webhooks", "secret": "not-whsec"}, "signing.secret"),
    ({"scheme": "standard-webhooks", "secret": "whsec_!!"}, "signing.secret"),
    ({"scheme": "hmac-sha256", "secret": "short"}, "signing.secret"),
    ({"scheme": "standard-webhooks", "secret": WHSEC, "header": "X-Sig"}, "signing.header"),
    ({"scheme": "rsa", "secret": WHSEC}, "signing.scheme"),
])
def test_a_bad_signing_field_is_a_400_naming_it(api: FlaskClient, signing: dict[str, Any],
                                                field: str) -> None:
    answer = api.post("/job/people", json=valid_job(signing=signing), headers=AUTH)
    assert answer.status_code == 400
    assert field in [p["field"] for p in answer.json["details"]], answer.json
    assert str(signing["secret"]) not in answer.get_data(as_text=True) or len(
        signing["secret"]) < 10


def test_signing_and_tls_secrets_are_never_shown_and_kept_only_for_the_same_host(
        api: FlaskClient, ca: trustme.CA, client_cert: trustme.LeafCert) -> None:
    identity = mtls(ca, client_cert)
    job = valid_job(signing={"scheme": "standard-webhooks", "secret": WHSEC}, tls=identity)
    assert api.post("/job/people", json=job, headers=AUTH).status_code == 201
    shown = api.get("/job/people", headers=AUTH)
    text = shown.get_data(as_text=True)
    assert WHSEC not in text and "PRIVATE KEY" not in text
    assert shown.json["signing"]["secret"] == "***" and shown.json["tls"]["client_key"] == "***"
    assert shown.json["tls"]["client_cert"] == identity["client_cert"]  # not a secret
    # Sent back as shown: kept
    assert api.post("/job/people", json=shown.json, headers=AUTH).status_code == 200
    # Sent back to another host: must be given again
    moved = api.post("/job/people", json={**shown.json, "url": "https://evil.example.net/{id}"},
                     headers=AUTH)
    assert moved.status_code == 400
    assert {"signing.secret", "tls.client_key"} <= {p["field"] for p in moved.json["details"]}


def test_a_certificate_expiring_within_14_days_shows_in_status_and_metrics(
        api: FlaskClient, ca: trustme.CA) -> None:
    soon = ca.issue_cert("soon-client", not_after=datetime.now(UTC) + timedelta(days=3))
    report = expiry_report(mtls(ca, soon))
    assert report is not None and report["expiring_soon"] is True
    assert expiry_report(mtls(ca, ca.issue_cert("later")))["expiring_soon"] is False  # type: ignore[index]
    api.post("/job/people", json=valid_job(tls=mtls(ca, soon)), headers=AUTH)
    metrics = api.get("/metrics", headers=AUTH).get_data(as_text=True)
    assert 'rest_consumer_tls_certificate_expiry_timestamp_seconds{job="people"}' in metrics


def test_signed_mutual_tls_deliveries_through_the_pipeline_leak_no_secret(
        pipeline: Any, real_redis: redis.Redis, ca: trustme.CA,
        client_cert: trustme.LeafCert) -> None:
    # Given an mTLS endpoint that answers 503 once to one record, then 200; 400 to another
    server = TlsEndpoint(ca, client_ca=ca).start()
    server.respond = lambda request, seen: (
        503 if request.path == "/p/retry" and seen == 0 else
        400 if request.path == "/p/refused" else 200)
    key = pem(client_cert.private_key_pem)
    try:
        topic = "identity.signed"
        pipeline.create_topic(topic)
        job = valid_job(url=server.url + "/p/{id}", topic=[topic], token="tok-SECRET-id",
                        signing={"scheme": "standard-webhooks", "secret": WHSEC},
                        tls=mtls(ca, client_cert), retry_backoff=0.2, retry_backoff_max=0.5)
        store = JobStore(real_redis, LOOPBACK)
        store.upsert("people", job)
        # and a job for the same endpoint that trusts it but has no client certificate
        store.upsert("nocert", {**job, "id": "nocert", "tls": {"ca": pem(ca.cert_pem)},
                                "max_retries": 1})
        pipeline.start_worker()
        pipeline.start_reader()
        ids = ["a", "retry", "b", "refused"]
        pipeline.produce(topic, [json.dumps({"id": i, "name": "n"}).encode() for i in ids])
        queued: list[bytes] = []

        def settled() -> bool:
            _sample_queues(real_redis, queued)
            return (len(server.received) == 3 and committed(real_redis)
                    and committed(real_redis, "nocert"))

        wait_for(settled, 60, 0.2, "the signed deliveries")
        # Then every request, retries included, verifies with the reference library
        for request in [*server.received, *server.failed]:
            Webhook(WHSEC).verify(request.body, request.headers)
        retried = [r for r in [*server.failed, *server.received] if r.path == "/p/retry"]
        assert len({r.headers["webhook-id"] for r in retried}) == 1 and len(retried) == 2
        # and no secret of the job is in a log, a queued task or an API answer
        app = create_app(Settings(api_token=AUTH["Authorization"][7:], redis_url=pipeline.env[
            "REDIS_URL"], kafka_bootstrap_servers=pipeline.kafka, destination_allowlist=LOOPBACK,
            consumer_group_prefix=pipeline.env["CONSUMER_GROUP_PREFIX"]),
            store=JobStore(real_redis, LOOPBACK), kafka_ready=lambda: None).test_client()
        answers = [app.get(p, headers=AUTH).get_data(as_text=True) for p in (
            "/job/people", "/jobs", "/job/people/dead_letters", "/metrics")]
        assert "HTTP 400" in answers[2]
        refused = app.get("/job/nocert/dead_letters", headers=AUTH).json["dead_letters"]
        assert len(refused) == 4 and all("TLS" in d["reason"] for d in refused), refused
        logs = pipeline.log("worker") + pipeline.log("reader")
        for secret in (WHSEC, WHSEC[6:], key.splitlines()[1], "tok-SECRET-id"):
            assert secret not in logs
            assert all(secret.encode() not in task for task in queued)
            assert all(secret not in answer for answer in answers)
    finally:
        server.stop()
