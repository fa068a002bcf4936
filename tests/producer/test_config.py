"""Tests of the sources file: validation, defaults, API roots and secret loading."""

from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from producer.config import (
    DEFAULT_TOKEN_URL,
    SourceConfig,
    load_source,
    load_sources,
    parse_sources,
)
from producer.errors import ConfigurationError
from producer.secrets import load_credentials

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sources.toml"

VALID: dict[str, Any] = {
    "sources": {
        "acme": {
            "deployment": "cloud",
            "base_url": "https://acme.atlassian.net",
            "auth": {"method": "basic", "username": "a@acme.example", "token_env": "ACME_TOKEN"},
        }
    }
}


def with_changes(**changes: Any) -> dict[str, Any]:
    """Return VALID with keys of the acme table replaced; None deletes a key."""
    document = copy.deepcopy(VALID)
    table = document["sources"]["acme"]
    for key, value in changes.items():
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    return document


def problems_of(document: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigurationError) as caught:
        parse_sources(document)
    return caught.value.problems


def test_example_file_loads() -> None:
    sources = load_sources(EXAMPLE)
    assert set(sources) == {"acme_cloud", "acme_oauth", "intranet_dc"}
    assert sources["acme_cloud"].api_root == "https://acme.atlassian.net/wiki/rest/api"
    assert sources["acme_oauth"].api_root == (
        "https://api.atlassian.com/ex/confluence/11111111-2222-4333-8444-555555555555/wiki/rest/api"
    )
    assert sources["intranet_dc"].api_root == "https://wiki.intranet.example/confluence/rest/api"


def test_defaults_applied() -> None:
    source = parse_sources(VALID)["acme"]
    assert source.concurrency == 4
    assert source.page_size == 50
    assert source.overlap == timedelta(minutes=15)
    assert source.time_zone is None
    assert source.spaces.include == ()
    assert source.spaces.statuses == frozenset({"current"})
    assert source.spaces.types == frozenset({"global", "personal"})
    assert source.content_types == frozenset({"page", "blogpost", "comment", "attachment", "label"})
    assert source.auth.token_url == DEFAULT_TOKEN_URL


def test_cloud_base_url_with_wiki_normalized() -> None:
    source = parse_sources(with_changes(base_url="https://acme.atlassian.net/wiki/"))["acme"]
    assert source.base_url == "https://acme.atlassian.net"
    assert source.api_root == "https://acme.atlassian.net/wiki/rest/api"
    assert source.api_base == "https://acme.atlassian.net/wiki"


def test_every_problem_reported_at_once() -> None:
    document = with_changes(
        deployment="clod",
        concurrency=0,
        page_size="big",
        rate_limit=-1,
        time_zone="Mars/Olympus",
        content_types=["page", "whiteboard"],
    )
    problems = problems_of(document)
    joined = "\n".join(problems)
    assert len(problems) == 6
    assert "sources.acme.deployment: invalid value 'clod'" in joined
    assert "sources.acme.concurrency: invalid value 0" in joined
    assert "sources.acme.page_size: invalid value 'big'" in joined
    assert "sources.acme.rate_limit: invalid value -1" in joined
    assert "unknown time zone 'Mars/Olympus'" in joined
    assert "'whiteboard'" in joined


def test_unknown_key_suggests_the_known_one() -> None:
    problems = problems_of(with_changes(concurency=8))
    assert problems == ["sources.acme.concurency: unknown key; did you mean 'concurrency'?"]


def test_unknown_auth_key_suggests() -> None:
    document = with_changes(
        auth={"method": "basic", "username": "a@acme.example", "token_evn": "TOKEN"}
    )
    joined = "\n".join(problems_of(document))
    assert "sources.acme.auth.token_evn: unknown key; did you mean 'token_env'?" in joined
    assert "missing token_env or token_file" in joined


@pytest.mark.parametrize(
    ("key", "replacement"),
    [
        ("token", "token_env or token_file"),
        ("password", "token_env or token_file"),
        ("client_secret", "client_secret_env or client_secret_file"),
        ("refresh_token", "refresh_token_file"),
    ],
)
def test_inline_secret_rejected_without_value(key: str, replacement: str) -> None:
    secret_value = "s3cr3t-value-never-shown"
    auth = {"method": "basic", "username": "a@acme.example", "token_env": "T", key: secret_value}
    problems = problems_of(with_changes(auth=auth))
    joined = "\n".join(problems)
    assert f"sources.acme.auth.{key}: secrets must not be written" in joined
    assert replacement in joined
    assert secret_value not in joined


def test_secret_env_and_file_both_set() -> None:
    auth = {"method": "pat", "token_env": "T", "token_file": "/run/secrets/t"}
    document = with_changes(deployment="datacenter", auth=auth)
    assert problems_of(document) == [
        "sources.acme.auth.token_env: both token_env and token_file are set: keep one of them"
    ]


def test_auth_method_must_fit_deployment() -> None:
    document = with_changes(auth={"method": "pat", "token_env": "T"})
    joined = "\n".join(problems_of(document))
    assert "method 'pat' does not work with deployment 'cloud': use basic" in joined


def test_oauth_needs_cloud_id_and_refresh_file() -> None:
    document = with_changes(
        deployment="cloud-oauth",
        base_url="https://api.atlassian.com",
        auth={"method": "oauth2", "client_id_env": "ID", "client_secret_env": "SECRET"},
    )
    joined = "\n".join(problems_of(document))
    assert "sources.acme.cloud_id: invalid value None" in joined
    assert "_edge/tenant_info" in joined
    assert "missing refresh_token_file" in joined


def test_insecure_http_url_rejected() -> None:
    joined = "\n".join(problems_of(with_changes(base_url="http://acme.atlassian.net")))
    assert "insecure URL 'http://acme.atlassian.net': use https" in joined


def test_local_http_url_accepted() -> None:
    source = parse_sources(with_changes(base_url="http://127.0.0.1:8090"))["acme"]
    assert source.api_root == "http://127.0.0.1:8090/wiki/rest/api"


def test_base_url_with_rest_api_rejected() -> None:
    document = with_changes(deployment="datacenter", base_url="https://wiki.example/rest/api")
    document["sources"]["acme"]["auth"] = {"method": "pat", "token_env": "T"}
    joined = "\n".join(problems_of(document))
    assert "give the site URL without /rest/api" in joined


def test_source_id_pattern_enforced() -> None:
    document = {"sources": {"Acme-Cloud": copy.deepcopy(VALID["sources"]["acme"])}}
    joined = "\n".join(problems_of(document))
    assert "invalid source id 'Acme-Cloud'" in joined


def test_space_included_and_excluded() -> None:
    document = with_changes(spaces={"include": ["ENG"], "exclude": ["ENG"], "types": ["team"]})
    joined = "\n".join(problems_of(document))
    assert "ENG are both included and excluded" in joined
    assert "invalid value(s) 'team'" in joined


def test_no_sources_defined() -> None:
    assert problems_of({}) == [
        "sources: no sources defined: add a [sources.ID] table for each Confluence site"
    ]


def test_missing_file_is_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_sources(tmp_path / "absent.toml")
    assert "not found" in caught.value.problems[0]


def test_invalid_toml_is_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "sources.toml"
    path.write_text("[sources.acme\n", encoding="utf-8")
    with pytest.raises(ConfigurationError) as caught:
        load_sources(path)
    assert "is not valid TOML" in caught.value.problems[0]


def test_unknown_source_id_suggests() -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_source(EXAMPLE, "acme_clod")
    assert caught.value.problems == [
        "--source 'acme_clod' is not defined in the sources file; did you mean 'acme_cloud'?"
    ]


def source_with_auth(auth: dict[str, Any], deployment: str = "datacenter") -> SourceConfig:
    document = with_changes(deployment=deployment, base_url="https://wiki.example", auth=auth)
    return parse_sources(document)["acme"]


def test_secrets_read_from_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DC_USER", "crawler")
    token_file = tmp_path / "password"
    token_file.write_text("pa55word\n", encoding="utf-8")
    source = source_with_auth(
        {"method": "basic", "username_env": "DC_USER", "token_file": str(token_file)}
    )
    credentials = load_credentials(source.auth)
    assert credentials.username == "crawler"
    assert credentials.token is not None
    assert credentials.token.reveal() == "pa55word"
    assert "pa55word" not in repr(credentials)


def test_missing_secrets_all_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ABSENT_ID", raising=False)
    monkeypatch.setenv("EMPTY_SECRET", " ")
    document = with_changes(
        deployment="cloud-oauth",
        base_url="https://api.atlassian.com",
        cloud_id="abc-123",
        auth={
            "method": "oauth2",
            "client_id_env": "ABSENT_ID",
            "client_secret_env": "EMPTY_SECRET",
            "refresh_token_file": str(tmp_path / "missing-refresh-token"),
        },
    )
    source = parse_sources(document)["acme"]
    with pytest.raises(ConfigurationError) as caught:
        load_credentials(source.auth)
    problems = caught.value.problems
    assert len(problems) == 3
    assert "environment variable ABSENT_ID is not set" in problems[0]
    assert "environment variable EMPTY_SECRET is empty" in problems[1]
    assert "missing-refresh-token does not exist" in problems[2]
