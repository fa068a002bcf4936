"""The separate virtual environment of the peer loaders, created on first use.

The peers (LangChain's and LlamaIndex's Confluence loaders) pin their own versions of
shared libraries such as requests, so they get a virtual environment of their own under
``.services/bench-venv`` and never touch the project's ``.venv``.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.config import PEER_VENV

logger = logging.getLogger(__name__)

INSTALL_TIMEOUT_SECONDS = 1800.0


@dataclass(frozen=True)
class Peer:
    """One peer loader: its PyPI package, extra packages it imports, and its script."""

    name: str
    package: str
    extras: tuple[str, ...]
    module: str


PEERS = (
    Peer(
        name="LlamaIndex ConfluenceReader",
        package="llama-index-readers-confluence",
        extras=("atlassian-python-api",),
        module="bench.peers.llamaindex_reader",
    ),
    Peer(
        name="LangChain ConfluenceLoader",
        package="langchain-community",
        extras=("atlassian-python-api", "beautifulsoup4", "lxml"),
        module="bench.peers.langchain_loader",
    ),
)


def python(venv: Path = PEER_VENV) -> Path:
    """Return the interpreter of the peers' virtual environment."""
    return venv / "bin" / "python"


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_SECONDS, check=False
    )


def _installed_version(venv: Path, package: str) -> str | None:
    result = _run(
        [
            str(python(venv)),
            "-c",
            "import sys; from importlib.metadata import version; print(version(sys.argv[1]))",
            package,
        ]
    )
    return result.stdout.strip() if result.returncode == 0 else None


def _last_error_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if "error" in line.lower()]
    if not lines:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def ensure_peers(venv: Path = PEER_VENV) -> dict[str, str]:
    """Create the venv and install every peer that is missing.

    Return each peer's state by name: its installed version, or
    ``not installable: <reason>`` when pip failed.
    """
    if not python(venv).exists():
        logger.info("creating the peers' virtual environment in %s", venv)
        created = _run([sys.executable, "-m", "venv", str(venv)])
        if created.returncode != 0:
            reason = _last_error_line(created.stderr)
            return {peer.name: f"not installable: venv creation failed: {reason}" for peer in PEERS}
    states: dict[str, str] = {}
    for peer in PEERS:
        version = _installed_version(venv, peer.package)
        if version is None:
            logger.info("installing %s into %s", peer.package, venv)
            pip = [str(python(venv)), "-m", "pip", "install", "--quiet"]
            installed = _run([*pip, peer.package, *peer.extras])
            if installed.returncode != 0:
                reason = _last_error_line(installed.stderr or installed.stdout)
                states[peer.name] = f"not installable: {reason}"
                continue
            version = _installed_version(venv, peer.package)
        states[peer.name] = f"{peer.package} {version}"
    return states
