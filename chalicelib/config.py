"""Configuration, parsed once from the environment into a typed object.

Every knob is documented in the README's configuration table. A missing or
malformed variable raises :class:`ConfigurationError` naming the variable.
"""

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from chalicelib.errors import ConfigurationError

DEFAULT_MAINTENANCE_CACHE_SECONDS = 10.0
# A cap on tokens in flight per resumer; the resumer keeps as many as the send
# rate needs below it (chalicelib/concurrency.py). 500/s at 3 calls of 50 ms wants
# about 113 with headroom; threads waiting on the network cost little memory.
DEFAULT_RESUME_CONCURRENCY = 128
CONTROL_FOLDER = "_sfn-pauser"
# A hold always ends: a pipeline that dies holds workflows for at most its TTL.
DEFAULT_HOLD_TTL_SECONDS = 3600
DEFAULT_HOLD_MAX_TTL_SECONDS = 86_400

T = TypeVar("T", int, float)


def normalise_prefix(prefix: str) -> str:
    """``""`` stays empty; anything else gets exactly one trailing slash and no leading one.

    >>> [normalise_prefix(p) for p in ("", "tokens", "tokens/", "/a//b/")]
    ['', 'tokens/', 'tokens/', 'a/b/']
    """
    parts = [part for part in prefix.split("/") if part]
    return "/".join(parts) + "/" if parts else ""


@dataclass(frozen=True)
class Settings:
    bucket: str
    prefix: str = ""
    maintenance_cache_seconds: float = DEFAULT_MAINTENANCE_CACHE_SECONDS
    resume_concurrency: int = DEFAULT_RESUME_CONCURRENCY
    log_level: str = "INFO"
    resume_rate_limit: float = 0.0
    resumer_function: str | None = None
    heartbeat_held_tasks: bool = False
    allowed_state_machines: tuple[str, ...] = ("*",)
    hold_default_ttl_seconds: int = DEFAULT_HOLD_TTL_SECONDS
    hold_max_ttl_seconds: int = DEFAULT_HOLD_MAX_TTL_SECONDS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        bucket = env.get("Bucket", "").strip()
        if not bucket:
            raise ConfigurationError("Bucket: environment variable is required (an S3 bucket name)")
        return cls(
            bucket=bucket,
            prefix=normalise_prefix(env.get("Prefix", "")),
            maintenance_cache_seconds=_number(
                env, "MaintenanceCacheSeconds", DEFAULT_MAINTENANCE_CACHE_SECONDS, float, 0
            ),
            resume_concurrency=_number(env, "ResumeConcurrency", DEFAULT_RESUME_CONCURRENCY, int, 1),
            log_level=_log_level(env),
            resume_rate_limit=_number(env, "ResumeRateLimit", 0.0, float, 0.0),
            resumer_function=env.get("ResumerFunctionName", "").strip() or None,
            heartbeat_held_tasks=_boolean(env, "HeartbeatHeldTasks"),
            allowed_state_machines=_patterns(env, "AllowedStateMachines"),
            **_hold_ttls(env),
        )


def _number(env: Mapping[str, str], name: str, default: T, kind: type[T], minimum: T) -> T:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    expected = "a whole number" if kind is int else "a number"
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigurationError(f"{name}: expected {expected}, got {raw!r}") from None
    if not math.isfinite(value):
        raise ConfigurationError(f"{name}: expected {expected}, got {raw!r}")
    if value < minimum:
        raise ConfigurationError(f"{name}: expected at least {minimum}, got {raw!r}")
    return value


def _hold_ttls(env: Mapping[str, str]) -> dict[str, int]:
    maximum = _number(env, "HoldMaxTtlSeconds", DEFAULT_HOLD_MAX_TTL_SECONDS, int, 60)
    default = _number(env, "HoldDefaultTtlSeconds", min(DEFAULT_HOLD_TTL_SECONDS, maximum), int, 60)
    if default > maximum:
        raise ConfigurationError(
            f"HoldDefaultTtlSeconds: expected at most HoldMaxTtlSeconds ({maximum}), got {default}"
        )
    return {"hold_default_ttl_seconds": default, "hold_max_ttl_seconds": maximum}


def _log_level(env: Mapping[str, str]) -> str:
    level = env.get("LogLevel", "").strip().upper() or "INFO"
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigurationError(f"LogLevel: expected DEBUG, INFO, WARNING, ERROR or CRITICAL, got {level!r}")
    return level


def _boolean(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "false", "0", "no"):
        return False
    if raw in ("true", "1", "yes"):
        return True
    raise ConfigurationError(f"{name}: expected true or false, got {raw!r}")


def _patterns(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Comma-separated ARN patterns (``*`` and ``?`` wildcards); absent means ``*``."""
    raw = env.get(name, "").strip()
    if not raw:
        return ("*",)
    patterns = tuple(part.strip() for part in raw.split(",") if part.strip())
    for pattern in patterns:
        if pattern != "*" and not pattern.startswith("arn:"):
            raise ConfigurationError(
                f"{name}: expected ARN patterns such as arn:aws:states:*:123456789012:stateMachine:*, got {pattern!r}"
            )
    return patterns
