"""Secrets of a source: read from environment variables or files, never logged.

``Secret`` hides its value from ``repr`` and ``str`` so that it cannot reach a log line
or a traceback by accident. ``RefreshTokenFile`` keeps the rotating OAuth refresh token
and rewrites it atomically (temporary file, fsync, rename), because Atlassian disables a
refresh token once it has been used: losing the new one means a new user consent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from producer.config import AuthConfig, SecretRef
from producer.errors import ConfigurationError, FatalError

logger = logging.getLogger(__name__)

SECRET_FILE_MODE = 0o600


class Secret:
    """A secret string; ``reveal()`` returns the value, ``repr`` and ``str`` do not."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def read_secret(ref: SecretRef, key: str, problems: list[str]) -> Secret | None:
    """Read one secret; append a problem naming ``key`` and the fix when it is unusable."""
    if ref.env is not None:
        value = os.environ.get(ref.env)
        if value is None or not value.strip():
            state = "is not set" if value is None else "is empty"
            problems.append(
                f"{key}: environment variable {ref.env} {state}; export it with the secret"
            )
            return None
        return Secret(value.strip())
    assert ref.file is not None
    try:
        value = ref.file.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.append(f"{key}: file {ref.file} does not exist; write the secret into it")
        return None
    except OSError as error:
        problems.append(
            f"{key}: file {ref.file} cannot be read ({error.strerror}); check its permissions"
        )
        return None
    if not value.strip():
        problems.append(f"{key}: file {ref.file} is empty; write the secret into it")
        return None
    return Secret(value.strip())


@dataclass(frozen=True)
class Credentials:
    """The secrets of one source, read once when its client is built."""

    username: str | None = None
    token: Secret | None = None
    client_id: Secret | None = None
    client_secret: Secret | None = None


def load_credentials(auth: AuthConfig, *, where: str = "auth") -> Credentials:
    """Read every secret ``auth`` names; raise ConfigurationError listing all problems."""
    problems: list[str] = []
    username = auth.username
    if auth.method == "basic" and auth.username_env is not None:
        value = os.environ.get(auth.username_env, "").strip()
        if not value:
            problems.append(
                f"{where}.username_env: environment variable {auth.username_env} is not set "
                "or empty; export it with the user name"
            )
        username = value or None
    token = None
    if auth.token is not None:
        token = read_secret(auth.token, f"{where}.token", problems)
    client_id = client_secret = None
    if auth.client_id is not None:
        client_id = read_secret(auth.client_id, f"{where}.client_id", problems)
    if auth.client_secret is not None:
        client_secret = read_secret(auth.client_secret, f"{where}.client_secret", problems)
    if auth.method == "oauth2":
        assert auth.refresh_token_file is not None
        RefreshTokenFile(auth.refresh_token_file).check(f"{where}.refresh_token_file", problems)
    if problems:
        raise ConfigurationError(problems)
    return Credentials(
        username=username, token=token, client_id=client_id, client_secret=client_secret
    )


class RefreshTokenFile:
    """File containing a rotating OAuth refresh token, rewritten atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def check(self, key: str, problems: list[str]) -> None:
        """Append a problem when the file cannot be read or its folder cannot be written."""
        probe: list[str] = []
        read_secret(SecretRef(file=self.path), key, probe)
        problems.extend(
            f"{text}; it must hold the refresh token of the OAuth grant" for text in probe
        )
        folder = self.path.parent
        if not os.access(folder, os.W_OK | os.X_OK):
            problems.append(
                f"{key}: folder {folder} is not writable; the producer must replace "
                f"{self.path.name} there after every token refresh"
            )

    def load(self) -> Secret:
        """Read the current refresh token."""
        problems: list[str] = []
        secret = read_secret(SecretRef(file=self.path), "refresh_token_file", problems)
        if secret is None:
            raise ConfigurationError(problems)
        return secret

    def save(self, token: Secret) -> None:
        """Replace the file with ``token``: temporary file, fsync, rename, fsync folder.

        Raises FatalError when the file cannot be written, because the old refresh token
        is already disabled and the new one would otherwise be lost.
        """
        folder = self.path.parent
        descriptor = -1
        temporary = ""
        try:
            descriptor, temporary = tempfile.mkstemp(
                prefix=f".{self.path.name}.", suffix=".tmp", dir=folder
            )
            os.fchmod(descriptor, SECRET_FILE_MODE)
            os.write(descriptor, (token.reveal() + "\n").encode("utf-8"))
            os.fsync(descriptor)
            os.close(descriptor)
            descriptor = -1
            os.replace(temporary, self.path)
            temporary = ""
            _fsync_folder(folder)
        except OSError as error:
            raise FatalError(
                f"cannot write the new OAuth refresh token to {self.path} ({error.strerror}); "
                "the previous token is already disabled, so make the folder writable, then "
                "renew the grant (a new consent) and write its refresh token to this file"
            ) from error
        finally:
            if descriptor >= 0:
                os.close(descriptor)
            if temporary:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
        logger.info("saved rotated OAuth refresh token path=%s", self.path)


def _fsync_folder(folder: Path) -> None:
    """Flush the rename to disk; some file systems do not support fsync on folders."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(descriptor)
    finally:
        os.close(descriptor)
