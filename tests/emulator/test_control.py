"""The control API under ``/_emulator``: mutations become visible through the REST API,
and clock, limits, faults, search settings and counters change at run time."""

from __future__ import annotations

import requests

from emulator.app import ServerThread
from emulator.model import ContentStatus, ContentType

from .conftest import Api, api_for, make_options


def _current_space(server: ServerThread) -> str:
    return next(space.key for space in server.site.spaces.values() if space.status == "current")


def _create_page(api: Api, space: str, title: str, **extra: object) -> str:
    response = api.control(
        "POST", "/content", {"type": "page", "space": space, "title": title, **extra}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_create_edit_visible(fresh_emulator: ServerThread) -> None:
    api = api_for(fresh_emulator, "cloud")
    space = _current_space(fresh_emulator)
    page_id = _create_page(api, space, "Control page", body="<p>first</p>", labels=["alpha"])
    item = api.get_json(f"/content/{page_id}", expand="body.storage,version,metadata.labels")
    assert item["title"] == "Control page"
    assert item["body"]["storage"]["value"] == "<p>first</p>"
    assert item["version"]["number"] == 1
    assert [label["name"] for label in item["metadata"]["labels"]["results"]] == ["alpha"]

    edited = api.control(
        "POST", f"/content/{page_id}/edit", {"body": "<p>second</p>", "message": "fix"}
    )
    assert edited.status_code == 200
    assert edited.json()["version"] == 2
    item = api.get_json(f"/content/{page_id}", expand="body.storage,version")
    assert item["body"]["storage"]["value"] == "<p>second</p>"
    assert item["version"]["message"] == "fix"


def test_move_visible(fresh_emulator: ServerThread) -> None:
    api = api_for(fresh_emulator, "cloud")
    space = _current_space(fresh_emulator)
    parent = _create_page(api, space, "Move parent")
    child = _create_page(api, space, "Move child")
    moved = api.control("POST", f"/content/{child}/move", {"parent_id": parent})
    assert moved.status_code == 200
    children = api.get_json(f"/content/{parent}/child/page")["results"]
    assert [item["id"] for item in children] == [child]
    ancestors = api.get_json(f"/content/{child}", expand="ancestors")["ancestors"]
    assert ancestors[-1]["id"] == parent


def test_trash_restore_purge(fresh_emulator: ServerThread) -> None:
    api = api_for(fresh_emulator, "cloud")
    space = _current_space(fresh_emulator)
    page_id = _create_page(api, space, "Doomed page")
    assert api.control("POST", f"/content/{page_id}/trash").json()["status"] == "trashed"
    assert api.get(f"/content/{page_id}").status_code == 404
    assert api.get_json(f"/content/{page_id}", status="trashed")["status"] == "trashed"
    assert api.control("POST", f"/content/{page_id}/restore").json()["status"] == "current"
    assert api.get_json(f"/content/{page_id}")["status"] == "current"

    rejected_purge = api.control("POST", f"/content/{page_id}/purge")
    assert rejected_purge.status_code == 400
    assert page_id in rejected_purge.json()["error"]

    api.control("POST", f"/content/{page_id}/trash")
    assert api.control("POST", f"/content/{page_id}/purge").status_code == 200
    purged = api.get(f"/content/{page_id}", status="any")
    assert purged.status_code == 404
    assert purged.json()["message"].endswith(f"No content found with id : {page_id}")


def test_archive_space(fresh_emulator: ServerThread) -> None:
    api = api_for(fresh_emulator, "cloud")
    space = _current_space(fresh_emulator)
    assert api.control("POST", f"/space/{space}/archive").json()["status"] == "archived"
    archived = api.get_json("/space", status="archived")["results"]
    assert space in [item["key"] for item in archived]
    assert api.get_json("/content/search", cql=f"space = {space}")["results"] == []


def test_labels(fresh_emulator: ServerThread) -> None:
    api = api_for(fresh_emulator, "cloud")
    page_id = _create_page(api, _current_space(fresh_emulator), "Label page")
    assert api.control("POST", f"/content/{page_id}/labels", {"name": "beta"}).status_code == 201
    assert [item["name"] for item in api.get_json(f"/content/{page_id}/label")["results"]] == [
        "beta"
    ]
    assert api.control("DELETE", f"/content/{page_id}/labels/beta").status_code == 200
    assert api.get_json(f"/content/{page_id}/label")["results"] == []


def test_clock(fresh_emulator: ServerThread) -> None:
    api = api_for(fresh_emulator, "cloud")
    response = api.control("POST", "/clock", {"when": "2024-03-31T01:30:00Z", "frozen": True})
    assert response.json() == {"now": "2024-03-31T01:30:00.000Z", "frozen": True}
    page_id = _create_page(api, _current_space(fresh_emulator), "Clock page")
    item = api.get_json(f"/content/{page_id}", expand="version")
    assert item["version"]["when"] == "2024-03-31T01:30:00.000Z"
    advanced = api.control("POST", "/clock", {"advance_seconds": 90})
    assert advanced.json()["now"] == "2024-03-31T01:31:30.000Z"
    bad = api.control("POST", "/clock", {"when": "yesterday"})
    assert bad.status_code == 400
    assert "'yesterday'" in bad.json()["error"]


def test_rate_limit_and_counters(fresh_emulator: ServerThread) -> None:
    api = api_for(fresh_emulator, "cloud")
    assert api.control("POST", "/counters/reset").status_code == 200
    limited = api.control(
        "POST", "/rate-limit", {"enabled": True, "rate_per_second": 0.01, "burst": 2}
    )
    assert limited.json()["burst"] == 2
    statuses = [api.get("/space").status_code for _ in range(4)]
    assert statuses[:2] == [200, 200]
    assert 429 in statuses[2:]
    counters = api.control("GET", "/counters").json()
    assert counters["requests"]["GET /space"]["200"] == 2
    assert counters["requests"]["GET /space"]["429"] == 4 - 2
    assert counters["throttled"] >= 1
    api.control("POST", "/rate-limit", {"enabled": False})
    assert api.get("/space").status_code == 200
    reset = api.control("POST", "/counters/reset").json()
    assert reset["requests"] == {}


def test_faults_runtime(fresh_emulator: ServerThread) -> None:
    api = api_for(fresh_emulator, "cloud")
    added = api.control("POST", "/faults", {"rule": "/space:503:1.0"})
    assert added.status_code == 201
    assert api.get("/space").status_code == 503
    assert api.control("DELETE", "/faults").json() == {"faults": []}
    assert api.get("/space").status_code == 200
    bad = api.control("POST", "/faults", {"rule": "/space:teapot:1.0"})
    assert bad.status_code == 400
    assert "teapot" in bad.json()["error"]


def test_site_counts(fresh_emulator: ServerThread) -> None:
    api = api_for(fresh_emulator, "cloud")
    before = api.control("GET", "/site").json()["counts"]
    _create_page(api, _current_space(fresh_emulator), "Counted page")
    after = api.control("GET", "/site").json()["counts"]
    assert after["page"] == before["page"] + 1
    site_pages = sum(
        1
        for item in fresh_emulator.site.contents()
        if item.type is ContentType.PAGE and item.status is ContentStatus.CURRENT
    )
    assert after["page"] == site_pages


def test_bad_requests_name_value(fresh_emulator: ServerThread) -> None:
    api = api_for(fresh_emulator, "cloud")
    missing = api.control("POST", "/content", {"type": "page", "space": "NOPE", "title": "x"})
    assert missing.status_code in (400, 404)
    assert "NOPE" in missing.json()["error"]
    wrong_type = api.control("POST", "/content", {"type": "folder", "space": "X", "title": "x"})
    assert wrong_type.status_code == 400
    assert "'folder'" in wrong_type.json()["error"]
    not_json = requests.post(f"{api.origin}/_emulator/content", data=b"{", timeout=30)
    assert not_json.status_code == 400
    assert api.control("GET", "/nothing").status_code == 404


def test_control_off_by_default() -> None:
    with ServerThread(make_options(control=False)) as server:
        response = requests.get(f"http://127.0.0.1:{server.port}/_emulator/site", timeout=30)
        assert response.status_code == 404


def test_oauth_grant_and_v1_gone(fresh_emulator: ServerThread) -> None:
    api = api_for(fresh_emulator, "gateway")
    scopes = ["read:confluence-space.summary", "search:confluence", "offline_access"]
    grant = api.control("POST", "/oauth/grant", {"scopes": scopes})
    assert grant.status_code == 201
    tokens = grant.json()
    assert tokens["expires_in"] == 3600
    bearer = requests.Session()
    bearer.headers["Authorization"] = f"Bearer {tokens['access_token']}"
    space_url = api.url("/space")
    search_url = api.url("/search")
    assert bearer.get(space_url, timeout=30).status_code == 200
    assert bearer.get(search_url, params={"cql": "type = page"}, timeout=30).status_code == 200

    switched = api.control("POST", "/server", {"v1_gone": True})
    assert switched.json()["v1_gone"] is True
    v1_read = bearer.get(space_url, timeout=30)
    assert v1_read.status_code == 410
    assert bearer.get(search_url, params={"cql": "type = page"}, timeout=30).status_code == 200
    # Basic auth on the Cloud site root still serves the v1 reads.
    assert api_for(fresh_emulator, "cloud").get("/space").status_code == 200


def test_latency_setting(fresh_emulator: ServerThread) -> None:
    api = api_for(fresh_emulator, "cloud")
    changed = api.control("POST", "/server", {"latency_ms": 5, "latency_jitter_ms": 2})
    assert changed.json()["latency_ms"] == 5.0
    assert changed.json()["latency_jitter_ms"] == 2.0
    assert api.get("/space").status_code == 200
    rejected = api.control("POST", "/server", {"latency_ms": -1})
    assert rejected.status_code == 400
    assert "-1" in rejected.json()["error"]


def test_start_options_reach_gate() -> None:
    options = make_options(
        rate_limit=0.01,
        burst=2,
        faults=("/content/search:503:1.0",),
        latency_ms=3.0,
        latency_jitter_ms=1.0,
        v1_gone=True,
    )
    with ServerThread(options) as server:
        api = api_for(server, "cloud")
        statuses = [api.get("/space").status_code for _ in range(3)]
        assert statuses[:2] == [200, 200]
        assert statuses[2] == 429
        api.control("POST", "/rate-limit", {"enabled": False})
        assert api.get("/content/search", cql="type = page").status_code == 503
        settings = api.control("GET", "/server").json()
        assert settings["latency_ms"] == 3.0
        assert settings["latency_jitter_ms"] == 1.0
        assert settings["v1_gone"] is True


def test_points_charge_per_object(fresh_emulator: ServerThread) -> None:
    api = api_for(fresh_emulator, "gateway")
    scopes = ["search:confluence", "read:confluence-content.summary"]
    tokens = api.control("POST", "/oauth/grant", {"scopes": scopes}).json()
    assert api.control("POST", "/points", {"enabled": True}).status_code == 200
    api.control("POST", "/counters/reset")
    bearer = requests.Session()
    bearer.headers["Authorization"] = f"Bearer {tokens['access_token']}"
    response = bearer.get(api.url("/content/search"), params={"cql": "type = page", "limit": 5})
    assert response.status_code == 200
    rows = len(response.json()["results"])
    assert rows == 5
    assert api.control("GET", "/counters").json()["points_used"] == 1 + rows


def test_token_lifetimes(fresh_emulator: ServerThread) -> None:
    api = api_for(fresh_emulator, "gateway")
    defaults = api.control("GET", "/oauth/lifetimes").json()
    assert defaults["access_token_seconds"] == 3600
    assert defaults["refresh_idle_seconds"] == 90 * 86400
    assert defaults["refresh_absolute_seconds"] == 365 * 86400
    changed = api.control(
        "POST", "/oauth/lifetimes", {"access_token_seconds": 30, "refresh_idle_seconds": 120}
    )
    assert changed.status_code == 200
    assert changed.json()["access_token_seconds"] == 30
    assert changed.json()["refresh_idle_seconds"] == 120
    assert changed.json()["refresh_absolute_seconds"] == 365 * 86400

    assert api.control("POST", "/clock", {"frozen": True}).status_code == 200
    scopes = ["search:confluence", "offline_access"]
    tokens = api.control("POST", "/oauth/grant", {"scopes": scopes}).json()
    assert tokens["expires_in"] == 30
    bearer = requests.Session()
    bearer.headers["Authorization"] = f"Bearer {tokens['access_token']}"
    search_url = api.url("/search")
    assert bearer.get(search_url, params={"cql": "type = page"}, timeout=30).status_code == 200
    api.control("POST", "/clock", {"advance_seconds": 31})
    expired = bearer.get(search_url, params={"cql": "type = page"}, timeout=30)
    assert expired.status_code == 401

    # The refresh token has been idle longer than 120 seconds after another 100.
    api.control("POST", "/clock", {"advance_seconds": 100})
    credentials = fresh_emulator.credentials
    refreshed = requests.post(
        f"{api.origin}/oauth/token",
        json={
            "grant_type": "refresh_token",
            "client_id": credentials.oauth_client_id,
            "client_secret": credentials.oauth_client_secret,
            "refresh_token": tokens["refresh_token"],
        },
        timeout=30,
    )
    assert refreshed.status_code == 403
    assert refreshed.json()["error"] == "invalid_grant"


def test_token_lifetimes_reject_bad_values(fresh_emulator: ServerThread) -> None:
    api = api_for(fresh_emulator, "gateway")
    negative = api.control("POST", "/oauth/lifetimes", {"access_token_seconds": -1})
    assert negative.status_code == 400
    assert "access_token" in negative.json()["error"]
    wrong_type = api.control("POST", "/oauth/lifetimes", {"refresh_idle_seconds": "long"})
    assert wrong_type.status_code == 400
    assert "refresh_idle_seconds" in wrong_type.json()["error"]
