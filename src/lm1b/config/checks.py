"""The error type and the one helper every config check uses, so messages read alike."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A config value breaks a rule; the message names the field and what is allowed."""


def require(ok: bool, field: str, value: Any, allowed: str) -> None:
    """Raise ConfigError("<field>=<value> is invalid: <allowed>") unless `ok`."""
    if not ok:
        raise ConfigError(f"{field}={value!r} is invalid: {allowed}")
