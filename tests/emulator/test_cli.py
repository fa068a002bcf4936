"""``confluence-emulator serve`` as a user runs it: bad options and a real server process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import requests

from emulator.app import ServerThread
from emulator.cli import bench_serve_argv, main, page_tail

from .conftest import api_for, make_options

COMMAND = [sys.executable, "-m", "emulator"]
# `python -m emulator` must import this checkout, installed or not.
REPOSITORY = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        (["--flavour", "mainframe"], "--flavour 'mainframe'"),
        (["--rate-limit", "-5"], "--rate-limit"),
        (["--rate-limit", "fast"], "--rate-limit 'fast'"),
        (["--latency", "-1"], "--latency -1"),
        (["--site", "corpus", "--corpus", "/nonexistent/docs"], "/nonexistent/docs"),
        (["--fault", "/content:teapot:0.5"], "teapot"),
        (["--fault", "nonsense"], "nonsense"),
        (["--time-zone", "Mars/Olympus"], "Mars/Olympus"),
        (["--port", "notaport"], "notaport"),
        (["--port", "0", "--pages", "3", "--spaces", "10"], "--pages/--spaces"),
        (["--media-host", "media host"], "--media-host 'media host'"),
        (["--reader-email", "emulator@example.com"], "--reader-email"),
        (["--reader-token", ""], "--reader-token"),
    ],
)
def test_bad_option_exits_2(
    arguments: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        code = main(["serve", *arguments])
        raise SystemExit(code)
    assert caught.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("confluence-emulator")
    assert fragment in lines[0]
    assert captured.out == ""


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "serve" in capsys.readouterr().out


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    with subprocess.Popen(
        [
            *COMMAND,
            "serve",
            "--port",
            "0",
            "--pages",
            "40",
            "--control",
            "--context-path",
            "/confluence",
            "--api-token",
            "cli-token",
            "--user-email",
            "cli@example.com",
            "--reader-token",
            "cli-reader-token",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        lines: dict[str, str] = {}
        try:
            while "OAuth client" not in lines:
                line = process.stdout.readline()
                if not line:
                    raise AssertionError(f"server ended early: {process.stderr.read()}")
                label, _, value = line.strip().partition(": ")
                lines[label] = value
            yield process, lines
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


def test_serve_prints_and_serves(served: tuple[subprocess.Popen[str], dict[str, str]]) -> None:
    process, lines = served
    cloud = lines["Cloud site base URL"]
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/wiki", cloud)
    assert lines["Data Center base URL"].endswith("/confluence")
    assert "/ex/confluence/" in lines["OAuth gateway base URL"]
    assert lines["Control API"].endswith("/_emulator")
    assert "api_token=cli-token" in lines["Cloud Basic credentials"]
    response = requests.get(
        cloud + "/rest/api/space", auth=("cli@example.com", "cli-token"), timeout=30
    )
    assert response.status_code == 200
    assert response.json()["results"]
    wrong_token = requests.get(
        cloud + "/rest/api/space", auth=("cli@example.com", "wrong"), timeout=30
    )
    assert wrong_token.status_code == 403
    reader = lines["Second user (left out of some read restrictions)"]
    assert "email=reader@example.com" in reader
    assert "token=cli-reader-token" in reader
    as_reader = requests.get(
        cloud + "/rest/api/user/current",
        auth=("reader@example.com", "cli-reader-token"),
        timeout=30,
    )
    assert as_reader.status_code == 200
    assert as_reader.json()["email"] == "reader@example.com"
    assert process.poll() is None


def test_sigterm_stops_server(served: tuple[subprocess.Popen[str], dict[str, str]]) -> None:
    process, _ = served
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


def test_all_bad_options_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["serve", "--flavour", "mainframe", "--latency", "-3", "--search-lag", "-1"])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert "--flavour 'mainframe'" in lines[0]
    assert "--latency -3" in lines[0]
    assert "--search-lag -1" in lines[0]


def test_empty_corpus_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["serve", "--site", "corpus", "--corpus", str(tmp_path), "--port", "0"])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert str(tmp_path) in lines[0]


def test_corpus_site_served(tmp_path: Path) -> None:
    (tmp_path / "guide").mkdir()
    (tmp_path / "index.html").write_text(
        "<html><head><title>Guide Home</title></head><body><h1>Guide Home</h1>"
        '<p>Start with <a href="guide/intro.html">the intro</a>.</p></body></html>'
    )
    (tmp_path / "guide" / "intro.html").write_text(
        "<html><head><title>Intro</title></head><body><h1>Intro</h1>"
        "<p>Plain words about the corpus.</p></body></html>"
    )
    options = make_options(site="corpus", corpus=tmp_path)
    with ServerThread(options) as server:
        api = api_for(server, "cloud")
        titles = {
            item["title"]
            for key in server.site.spaces
            for item in api.get_json("/content", spaceKey=key, type="page")["results"]
        }
        assert {"Guide Home", "Intro"} <= titles


def test_bench_prints_result(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["bench", "--pages", "60", "--duration", "1", "--concurrency", "2", "--limit", "10"]
    )
    assert code == 0
    line = capsys.readouterr().out.strip()
    fields = dict(part.split("=", 1) for part in line.split())
    assert int(fields["requests"]) > 0
    assert fields["limit"] == "10"
    assert fields["statuses"].startswith("200:")
    assert "," not in fields["statuses"]


def test_bench_passes_serve_options() -> None:
    argv = ["bench", "--pages", "60", "--duration=3", "--limit", "10", "--port", "9", "--dc-quirks"]
    assert bench_serve_argv(argv) == ["serve", "--pages", "60", "--dc-quirks", "--port", "0"]


def test_bench_reads_page_tail() -> None:
    body = orjson.dumps(
        {
            "results": [{"id": "1", "_links": {"next": "/rest/api/content/1/child/page"}}],
            "start": 0,
            "limit": 1,
            "size": 1,
            "_links": {"base": "http://h/wiki", "next": "/rest/api/content?start=1"},
        }
    )
    assert page_tail(body) == (1, "/rest/api/content?start=1")
    last = orjson.dumps({"results": [], "start": 5, "limit": 1, "size": 0, "_links": {}})
    assert page_tail(last) == (0, None)
