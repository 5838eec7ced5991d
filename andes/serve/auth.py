"""Who may use the inference routes: optional API keys, each naming a tenant, and a per-key
limit on concurrent requests.

Keys are read once, at start, from the environment variable and/or the file that
``andes.config.AuthConfig`` names (never from the YAML itself: a Kubernetes Secret mounts as
either). Each entry is ``tenant:secret``; entries are separated by newlines or commas, and a
bare ``secret`` names its tenant ``key<N>``. With no keys every request is let in as tenant
``anonymous``. The check compares the presented key with every known key using
``hmac.compare_digest`` (no early exit), so its time does not tell how much of a key matched.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from andes.config import AuthConfig
from andes.serve.protocol import ApiError

__all__ = ["ANONYMOUS", "Access", "Keys", "StreamSlots", "load_keys", "parse_keys"]

ANONYMOUS = "anonymous"


def parse_keys(text: str) -> dict[str, str]:
    """``{secret: tenant}`` from ``tenant:secret`` entries (newline- or comma-separated)."""
    keys: dict[str, str] = {}
    entries = [e.strip() for line in text.splitlines() for e in line.split(",")]
    for number, entry in enumerate((e for e in entries if e and not e.startswith("#")), start=1):
        tenant, sep, secret = entry.partition(":")
        if not sep:
            tenant, secret = f"key{number}", entry
        tenant, secret = tenant.strip(), secret.strip()
        if not secret or not tenant:
            raise ValueError(f"API keys: entry {number} has an empty tenant or key")
        keys[secret] = tenant
    return keys


def load_keys(config: AuthConfig, environ: Mapping[str, str] = os.environ) -> "Keys":
    """The keys ``config`` points at; a named file that cannot be read fails the start."""
    keys: dict[str, str] = {}
    if config.keys_env and environ.get(config.keys_env):
        keys.update(parse_keys(environ[config.keys_env]))
    if config.keys_file:
        try:
            keys.update(parse_keys(Path(config.keys_file).read_text()))
        except OSError as exc:
            raise ValueError(f"gateway.auth.keys_file: cannot read {config.keys_file!r}: {exc}") from None
    return Keys(keys)


@dataclass(frozen=True)
class Keys:
    """The known keys; ``tenant`` checks a request's ``Authorization`` header."""

    by_secret: Mapping[str, str]

    @property
    def is_enabled(self) -> bool:
        """Whether any key is configured (otherwise every request is let in)."""
        return bool(self.by_secret)

    def tenant(self, authorization: str | None) -> str:
        """The tenant of ``Authorization: Bearer <key>``; ``ApiError`` 401 if it is not known."""
        if not self.is_enabled:
            return ANONYMOUS
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'",
                           type="invalid_request_error", code="invalid_api_key")
        given = presented.strip().encode()
        found = None
        for secret, tenant in self.by_secret.items():  # every key compared: no early exit
            if hmac.compare_digest(given, secret.encode()):
                found = tenant
        if found is None:
            raise ApiError(401, "incorrect API key provided", type="invalid_request_error",
                           code="invalid_api_key")
        return found


@dataclass
class StreamSlots:
    """Concurrent requests per tenant, capped at ``limit`` (``None``: no cap)."""

    limit: int | None
    open: dict[str, int] = field(default_factory=dict)

    def acquire(self, tenant: str) -> None:
        """Take a slot for ``tenant``; ``ApiError`` 429 when it already holds ``limit``."""
        held = self.open.get(tenant, 0)
        if self.limit is not None and tenant != ANONYMOUS and held >= self.limit:
            raise ApiError(429, f"too many concurrent requests for this API key (at most "
                                f"{self.limit}); retry when one finishes",
                           type="rate_limit_error", code="rate_limit_exceeded",
                           headers={"Retry-After": "1"})
        self.open[tenant] = held + 1

    def release(self, tenant: str) -> None:
        """Give ``tenant``'s slot back."""
        held = self.open.get(tenant, 0) - 1
        if held > 0:
            self.open[tenant] = held
        else:
            self.open.pop(tenant, None)


@dataclass
class Access:
    """A gateway's keys and its per-key slots, built once from its ``AuthConfig``."""

    keys: Keys
    slots: StreamSlots

    @classmethod
    def from_config(cls, config: AuthConfig, environ: Mapping[str, str] = os.environ) -> "Access":
        """Read the keys ``config`` points at (see ``load_keys``)."""
        return cls(load_keys(config, environ), StreamSlots(config.max_streams_per_key))
