"""URL templates: values fill labels and segments, never the scheme, host or port."""

from __future__ import annotations

import pytest

from rest_consumer.core.errors import MappingError
from rest_consumer.core.urltemplate import TemplateError, UrlTemplate

TENANT = UrlTemplate.compile("https://{tenant}.partner.example:8443/ingest/{id}?x=1")


@pytest.mark.parametrize("tenant,url", [
    ("acme", "https://acme.partner.example:8443/ingest/7?x=1"),
    ("eu.acme", "https://eu.acme.partner.example:8443/ingest/7?x=1"),
    ("ACME-2", "https://ACME-2.partner.example:8443/ingest/7?x=1"),
])
def test_a_placeholder_before_a_literal_parent_domain_takes_labels(tenant: str,
                                                                    url: str) -> None:
    assert TENANT.fill({"tenant": tenant, "id": 7}) == url


@pytest.mark.parametrize("tenant", ["[v1.attacker.com]", "a..b", ".a", "a.", "a/b", "a?b",
                                    "a%2eb", "attacker.com:443", "a b", "ä"])
def test_anything_but_labels_in_the_host_is_refused(tenant: str) -> None:
    with pytest.raises(MappingError, match="host label"):
        TENANT.fill({"tenant": tenant, "id": 7})


def test_a_placeholder_inside_a_label_takes_one_label_only() -> None:
    template = UrlTemplate.compile("https://api-{region}.example.org/")
    assert template.fill({"region": "eu1"}) == "https://api-eu1.example.org/"
    with pytest.raises(MappingError, match="a host label"):
        template.fill({"region": "eu.evil"})


def test_values_in_the_path_and_query_are_percent_encoded() -> None:
    template = UrlTemplate.compile("http://h.example/a/{x}?q={x}#{x}")
    assert template.fill({"x": "a/b?c#d e"}) == (
        "http://h.example/a/a%2Fb%3Fc%23d%20e?q=a%2Fb%3Fc%23d%20e#a%2Fb%3Fc%23d%20e")


@pytest.mark.parametrize("template,problem", [
    ("https://{host}/x", "whole host"),
    ("https://{a}{b}/x", "whole host"),
    ("https://h.example:{port}/", "port"),
    ("{scheme}://h.example/", "http"),
    ("https://{user}@h.example/", "credentials"),
    ("https://u:p@h.example/", "credentials"),
    ("https://[{a}::1]/", "IP literal"),
    ("https:///x", "host"),
    ("https://h.example/a/./b", "'.' or '..'"),
])
def test_templates_that_would_let_data_move_the_request_are_refused(template: str,
                                                                     problem: str) -> None:
    with pytest.raises(TemplateError, match=problem):
        UrlTemplate.compile(template)


@pytest.mark.parametrize("values", [{"a": "..", "b": ""}, {"a": ".", "b": "."},
                                    {"a": ".", "b": ""}, {"a": "", "b": ".."}])
def test_values_that_make_a_dot_segment_are_refused(values: dict[str, str]) -> None:
    template = UrlTemplate.compile("http://h.example/a/{a}{b}/c")
    with pytest.raises(MappingError, match=r"'\.' or '\.\.' path segment"):
        template.fill(values)


@pytest.mark.parametrize("values,url", [
    ({"a": "..x", "b": ""}, "http://h.example/a/..x/c"),
    ({"a": "%2e%2e", "b": ""}, "http://h.example/a/%252e%252e/c"),
    ({"a": "", "b": ""}, "http://h.example/a//c"),
])
def test_dots_with_anything_else_stay_one_ordinary_segment(values: dict[str, str],
                                                            url: str) -> None:
    assert UrlTemplate.compile("http://h.example/a/{a}{b}/c").fill(values) == url
