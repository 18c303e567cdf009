"""Local services' helpers."""

from __future__ import annotations

from rest_consumer.devtools.services import free_port


def test_free_ports_are_never_handed_out_twice() -> None:
    # The kernel may offer a just-closed port again: two services started together then
    # fought for it (a Sentinel group once got the same port for two sentinels)
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
