"""Tests of ``confluence-producer check`` against the emulator."""

from __future__ import annotations

import argparse
import io
import json
import threading
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from producer.check import add_check_arguments, main, run_check
from tests.producer.conftest import EmulatorSite, StartEmulator


def to_toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(to_toml(item) for item in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML here")


def write_sources(site: EmulatorSite, path: Path, source_id: str, table: dict[str, Any]) -> Path:
    """Write one source table as a sources file, with its sub-tables."""
    lines = [f"[sources.{source_id}]"]
    nested = {key: value for key, value in table.items() if isinstance(value, dict)}
    for key, value in table.items():
        if key not in nested:
            lines.append(f"{key} = {to_toml(value)}")
    for name, sub in nested.items():
        lines.append(f"[sources.{source_id}.{name}]")
        lines.extend(f"{key} = {to_toml(value)}" for key, value in sub.items())
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tomllib.loads(path.read_text(encoding="utf-8"))
    return path


def run_file(sources: Path) -> tuple[int, str]:
    """Run ``check --source test --sources FILE``; return the exit status and output."""
    parser = argparse.ArgumentParser()
    add_check_arguments(parser)
    args = parser.parse_args(["--source", "test", "--sources", str(sources)])
    out = io.StringIO()
    status = run_check(args, out=out)
    return status, out.getvalue()


def check(site: EmulatorSite, deployment: str = "cloud", **overrides: Any) -> tuple[int, str]:
    table = site.source_table(deployment, **overrides)
    return run_file(write_sources(site, site.folder / "sources.toml", "test", table))


def row(output: str, name: str) -> str:
    for line in output.splitlines():
        if line.strip().startswith(name + " "):
            return line
    raise AssertionError(f"no row {name!r} in:\n{output}")


@pytest.mark.parametrize(
    ("deployment", "auth"),
    [("cloud", "basic"), ("cloud-oauth", "oauth2"), ("datacenter", "pat")],
)
def test_check_passes_on_each_root(emulator_site: EmulatorSite, deployment: str, auth: str) -> None:
    status, output = check(
        emulator_site, deployment, auth=auth, spaces={"include": ["ENG"], "exclude": ["OPE"]}
    )
    assert status == 0, output
    assert "all checks passed" in output
    assert "ok" in row(output, "credentials")
    assert "ok" in row(output, "spaces")
    assert "Europe/Berlin" in row(output, "time zone")
    if deployment == "cloud-oauth":
        assert "ok" in row(output, "scopes")


def test_onyx_misspelt_space_key_fails(emulator_site: EmulatorSite) -> None:
    """A misspelt space key must be a visible error, not a run with zero documents."""
    status, output = check(emulator_site, spaces={"include": ["ENG", "ENGG"]})
    assert status == 1
    spaces = row(output, "spaces")
    assert "FAILED" in spaces
    assert "ENGG" in spaces
    assert "fix: fix the spelling in sources.test.spaces" in output


def test_check_v1_gone_on_gateway(start_emulator: StartEmulator) -> None:
    site = start_emulator(v1_gone=True)
    status, output = check(site, "cloud-oauth")
    assert status == 1
    assert "FAILED" in row(output, "v1 reads")
    assert "HTTP 410" in row(output, "v1 reads")
    assert "ok" in row(output, "CQL search")
    assert "deployment 'cloud' with basic auth" in output


def test_check_missing_scope(emulator_site: EmulatorSite) -> None:
    granted = (
        "read:confluence-space.summary",
        "read:confluence-content.summary",
        "read:confluence-user",
        "offline_access",
    )
    table_scopes = [*granted, "search:confluence"]
    site = emulator_site
    table = site.source_table("cloud-oauth", scopes=granted)
    table["auth"]["scopes"] = table_scopes
    sources = write_sources(site, site.folder / "sources.toml", "test", table)
    status, output = run_file(sources)
    assert status == 1
    assert "the grant lacks search:confluence" in row(output, "scopes")
    assert "FAILED" in row(output, "CQL search")


def test_check_rejected_credentials(emulator_site: EmulatorSite) -> None:
    table = emulator_site.source_table("cloud")
    Path(table["auth"]["token_file"]).write_text("wrong\n", encoding="utf-8")
    sources = write_sources(emulator_site, emulator_site.folder / "sources.toml", "test", table)
    status, output = run_file(sources)
    assert status == 1
    assert "HTTP 403" in row(output, "credentials")
    assert "fix: check the basic credentials of sources.test.auth" in output


def test_check_configuration_error_exits_2(tmp_path: Path) -> None:
    sources = tmp_path / "sources.toml"
    sources.write_text('[sources.test]\ndeployment = "cloud"\n', encoding="utf-8")
    status, output = run_file(sources)
    assert status == 2
    assert "sources.test.base_url" in output
    assert "sources.test.auth: missing table" in output


def test_check_missing_secret_exits_2(emulator_site: EmulatorSite) -> None:
    table = emulator_site.source_table("datacenter")
    Path(table["auth"]["token_file"]).unlink()
    sources = write_sources(emulator_site, emulator_site.folder / "sources.toml", "test", table)
    status, output = run_file(sources)
    assert status == 2
    assert "does not exist; write the secret into it" in output


def test_check_command_line(
    emulator_site: EmulatorSite, capsys: pytest.CaptureFixture[str]
) -> None:
    table = emulator_site.source_table("cloud")
    sources = write_sources(emulator_site, emulator_site.folder / "sources.toml", "test", table)
    status = main(["--source", "test", "--sources", str(sources)])
    output = capsys.readouterr().out
    assert status == 0, output
    assert "ok" in row(output, "credentials")


class AnonymousUserHandler(BaseHTTPRequestHandler):
    """Data Center that treats every caller as anonymous, as it does for an unknown PAT."""

    def do_GET(self) -> None:
        if not self.path.startswith("/rest/api/user/current"):
            self.send_error(404)
            return
        body = json.dumps({"type": "anonymous", "displayName": "Anonymous"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        del format, args


def test_check_anonymous_user_fails(emulator_site: EmulatorSite) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), AnonymousUserHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        origin = f"http://127.0.0.1:{server.server_address[1]}"
        table = emulator_site.source_table("datacenter", auth="pat", base_url=origin)
        status, output = run_file(
            write_sources(emulator_site, emulator_site.folder / "sources.toml", "test", table)
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert status == 1
    assert "treated the request as anonymous" in row(output, "credentials")
    assert "replace the token" in output
