"""Configuration: read once from the environment, validated, frozen."""

from __future__ import annotations

import logging
import math
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from tracker.delivery.signing import decode_secret
from tracker.errors import ConfigError

T = TypeVar("T")

#: MODE: who delivers. DESIGN.md names the values after the project's phases.
#: phase1: the sweeper that holds a shard's lease delivers its notifications itself; the
#:   pod runs no consumer processes.
#: phase2: sweepers only stage notifications in the shard outboxes; every pod's consumer
#:   processes deliver them.
SWEEPER_DELIVERS, CONSUMERS_DELIVER = "phase1", "phase2"
MODES = (SWEEPER_DELIVERS, CONSUMERS_DELIVER)
REDIS_MODES = ("standalone", "cluster", "sentinel")
SINKS = ("log", "stream", "webhook")
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
REDIS_SCHEMES = ("redis", "rediss", "unix")
FLAGS = dict.fromkeys(("1", "true", "yes", "on"), True) | dict.fromkeys(
    ("0", "false", "no", "off"), False
)
MAX_SHARDS = 16384  # one per Redis Cluster slot at most


@dataclass(frozen=True, slots=True)
class Settings:
    redis_url: str
    redis_embedded: bool
    redis_tls_ca_file: Path | None
    redis_mode: str
    redis_sentinel_master: str
    mode: str
    pod_id: str
    host: str
    port: int
    timeout_interval_ms: int
    level_multipliers: tuple[float, float, float]
    min_timeout_ms: int
    max_timeout_ms: int
    leader_ttl_ms: int
    check_interval_ms: int
    prefetch_ms: int
    shard_count: int
    consumer_processes: int
    api_processes: int
    sweep_batch: int
    notify_sinks: tuple[str, ...]
    notify_stream: str
    notify_stream_maxlen: int
    webhook_url: str
    webhook_secrets: tuple[str, ...]
    webhook_timeout_ms: int
    breaker_failures: int
    breaker_cooldown_ms: int
    max_deliveries: int
    delivery_timeout_ms: int
    retry_base_ms: int
    api_tokens: tuple[str, ...]
    http_idle_timeout_ms: int
    http_body_timeout_ms: int
    access_log: bool
    console_tokens: tuple[str, ...]  # read-only: GET under /admin and /console
    answered_retention_ms: int
    history_retention_ms: int
    run_dir: Path
    metrics_dir: Path
    log_format: str
    log_level: str
    delivery_log_level: int  # the one line each delivered notification logs: INFO or DEBUG
    build_commit: str  # the commit the image was built from (tracker_build_info)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        r = _Reader(env)
        run_dir = Path(r.text("RUN_DIR", "var/run"))
        sinks = r.choices("NOTIFY_SINK", "log", SINKS)
        webhook_url = r.text("NOTIFY_WEBHOOK_URL", "")
        secrets = _items(r.secret("NOTIFY_WEBHOOK_SECRET") or "")
        if "webhook" in sinks:
            _check_http_url("NOTIFY_WEBHOOK_URL", webhook_url)
            if not secrets:
                raise ConfigError("NOTIFY_WEBHOOK_SECRET: required when NOTIFY_SINK has webhook")
            for secret in secrets:
                decode_secret(secret)
        redis_mode = r.choice("REDIS_MODE", "standalone", REDIS_MODES)
        redis_url = (r.secret("REDIS_URL") or "").strip()
        if redis_mode != "standalone" and not redis_url:
            raise ConfigError(f"REDIS_URL: required with REDIS_MODE={redis_mode}")
        interval = r.integer("TIMEOUT_INTERVAL_MS", 30_000, 10, 30 * 86_400_000)
        delivery_timeout = r.integer("DELIVERY_TIMEOUT_MS", 60_000, 100, 86_400_000)
        settings = cls(
            redis_url=_redis_url(redis_url or f"unix://{run_dir.resolve()}/redis.sock", redis_mode),
            redis_embedded=not redis_url,
            redis_tls_ca_file=_ca_file(r.text("REDIS_TLS_CA_FILE", ""), redis_url),
            redis_mode=redis_mode,
            redis_sentinel_master=r.token("REDIS_SENTINEL_MASTER", "mymaster"),
            mode=r.choice("MODE", CONSUMERS_DELIVER, MODES),
            pod_id=r.token("POD_ID", socket.gethostname()),
            host=r.text("HOST", "0.0.0.0"),
            port=r.integer("PORT", 8080, 0, 65535),
            timeout_interval_ms=interval,
            level_multipliers=_multipliers(r.text("LEVEL_MULTIPLIERS", "1,2,3")),
            min_timeout_ms=r.integer("MIN_TIMEOUT_MS", 100, 10, 86_400_000),
            max_timeout_ms=r.integer("MAX_TIMEOUT_MS", 7 * 86_400_000, 10, 365 * 86_400_000),
            leader_ttl_ms=round(r.number("LEADER_ELECTION_TTL", 10.0, 0.5, 3600.0) * 1000),
            check_interval_ms=r.integer("CHECK_INTERVAL_MS", 1000, 10, 600_000),
            prefetch_ms=r.integer("PREFETCH_MS", min(3000, delivery_timeout // 4), 0, 60_000),
            shard_count=r.integer("SHARD_COUNT", 16, 1, MAX_SHARDS),
            consumer_processes=r.integer("CONSUMER_PROCESSES", 2, 1, 256),
            api_processes=r.integer("API_PROCESSES", 1, 1, 256),
            sweep_batch=r.integer("SWEEP_BATCH", 500, 1, 1000),  # bounded: Lua unpack()
            notify_sinks=sinks,
            notify_stream=r.token("NOTIFY_STREAM", "timeout_notifications"),
            notify_stream_maxlen=r.integer("NOTIFY_STREAM_MAXLEN", 1_000_000, 1, 10**10),
            webhook_url=webhook_url,
            webhook_secrets=secrets,
            webhook_timeout_ms=r.integer("NOTIFY_WEBHOOK_TIMEOUT_MS", 5000, 10, 300_000),
            breaker_failures=r.integer("NOTIFY_WEBHOOK_BREAKER_FAILURES", 5, 1, 100_000),
            breaker_cooldown_ms=r.integer(
                "NOTIFY_WEBHOOK_BREAKER_COOLDOWN_MS", 30_000, 10, 3_600_000
            ),
            max_deliveries=r.integer("MAX_DELIVERIES", 5, 1, 1000),
            delivery_timeout_ms=delivery_timeout,
            retry_base_ms=r.integer("RETRY_BASE_MS", 500, 1, 600_000),
            api_tokens=_api_tokens(r.secret("API_TOKEN")),
            http_idle_timeout_ms=r.integer("HTTP_IDLE_TIMEOUT_MS", 75_000, 100, 3_600_000),
            http_body_timeout_ms=r.integer("HTTP_BODY_TIMEOUT_MS", 30_000, 100, 3_600_000),
            access_log=r.flag("ACCESS_LOG", False),
            console_tokens=_items(r.secret("CONSOLE_TOKEN") or ""),
            answered_retention_ms=r.integer(
                "ANSWERED_RETENTION_MS", 86_400_000, 1000, 365 * 86_400_000
            ),
            history_retention_ms=r.integer(
                "HISTORY_RETENTION_MS", 86_400_000, 1000, 365 * 86_400_000
            ),
            run_dir=run_dir,
            metrics_dir=Path(r.text("PROMETHEUS_MULTIPROC_DIR", str(run_dir / "metrics"))),
            log_format=r.choice("LOG_FORMAT", "text", LOG_FORMATS),
            log_level=r.choice("LOG_LEVEL", "INFO", LOG_LEVELS),
            delivery_log_level=logging.getLevelNamesMapping()[
                r.choice("DELIVERY_LOG_LEVEL", "INFO", ("INFO", "DEBUG"))
            ],
            build_commit=r.token("TRACKER_COMMIT", "unknown"),
        )
        _check_console_tokens(settings)
        if settings.min_timeout_ms > settings.max_timeout_ms:
            raise ConfigError("MIN_TIMEOUT_MS: must not exceed MAX_TIMEOUT_MS")
        if settings.prefetch_ms * 4 > settings.delivery_timeout_ms:
            # held entries are idle: another consumer would claim them as abandoned
            raise ConfigError("PREFETCH_MS: must not exceed a quarter of DELIVERY_TIMEOUT_MS")
        return settings

    @property
    def sweeper_delivers(self) -> bool:
        """MODE=phase1: the lease holder delivers; no consumer processes."""
        return self.mode == SWEEPER_DELIVERS

    @property
    def finished_retention_ms(self) -> int:
        """How long a finished conversation (answered, or every level fired) keeps its record
        (replays recognised) and its history: the longer of the two retentions."""
        return max(self.answered_retention_ms, self.history_retention_ms)

    def level_offsets_ms(self, interval_ms: int) -> tuple[int, int, int]:
        """Delay of each level after the agent message, for one interval."""
        a, b, c = (math.floor(m * interval_ms + 0.5) for m in self.level_multipliers)  # as Lua
        return a, b, c


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def text(self, name: str, default: str) -> str:
        value = self.env.get(name, "").strip()
        return value or default

    def items(self, name: str) -> tuple[str, ...]:
        return _items(self.env.get(name, ""))

    def secret(self, name: str) -> str | None:
        """A secret given as `name` or, as Kubernetes and Docker mount them, in the file
        `name`_FILE (stripped of surrounding white space); None when neither is set. Both
        set, an empty path or an unreadable or empty file is a ConfigError."""
        value, path = self.env.get(name), self.env.get(f"{name}_FILE")
        if path is None:
            return value
        if value is not None:
            raise ConfigError(f"{name}: set either {name} or {name}_FILE, not both")
        if not path.strip():
            raise ConfigError(f"{name}_FILE: empty path")
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{name}_FILE: {path} is not UTF-8 text") from None
        if not text:
            raise ConfigError(f"{name}_FILE: {path} is empty")
        return text

    def flag(self, name: str, default: bool) -> bool:
        raw = self.env.get(name, "").strip().lower()
        if not raw:
            return default
        if raw not in FLAGS:
            raise ConfigError(f"{name}: expected 1 or 0 (true/false, yes/no, on/off), got {raw!r}")
        return FLAGS[raw]

    def _parse(self, name: str, default: T, parse: Callable[[str], T], kind: str) -> T:
        raw = self.env.get(name, "").strip()
        if not raw:
            return default
        try:
            return parse(raw)
        except ValueError:
            raise ConfigError(f"{name}: expected {kind}, got {raw!r}") from None

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self._parse(name, default, int, "an integer")
        if not low <= value <= high:
            raise ConfigError(f"{name}: {value} is outside {low}..{high}")
        return value

    def number(self, name: str, default: float, low: float, high: float) -> float:
        value = self._parse(name, default, float, "a number")
        if not low <= value <= high:
            raise ConfigError(f"{name}: {value} is outside {low}..{high}")
        return value

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.text(name, default)
        if value not in allowed:
            raise ConfigError(f"{name}: {value!r} is not one of {', '.join(allowed)}")
        return value

    def choices(self, name: str, default: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
        values = self.items(name) or (default,)
        for value in values:
            if value not in allowed:
                raise ConfigError(f"{name}: {value!r} is not one of {', '.join(allowed)}")
        return tuple(dict.fromkeys(values))

    def token(self, name: str, default: str) -> str:
        value = self.text(name, default)
        if not value.isprintable() or any(c in value for c in " {}|") or len(value) > 128:
            raise ConfigError(f"{name}: {value!r} must be 1-128 printable characters, no spaces")
        return value


def _items(raw: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in raw.split(",") if v.strip())


def _api_tokens(raw: str | None) -> tuple[str, ...]:
    """API_TOKEN: unset means no auth; set, it must hold at least one token, so that an
    empty secret (a blank variable or file, only commas) never opens the API."""
    if raw is None:
        return ()
    tokens = _items(raw)
    if not tokens:
        raise ConfigError("API_TOKEN: set but holds no token; unset it to run without auth")
    for token in tokens:
        if not (token.isascii() and token.isprintable()) or " " in token:
            raise ConfigError("API_TOKEN: a token must be printable ASCII without spaces")
    return tokens


def _ca_file(path: str, redis_url: str) -> Path | None:
    """REDIS_TLS_CA_FILE: the CA bundle that signs the Redis servers' certificates."""
    if not path:
        return None
    if urlsplit(redis_url).scheme != "rediss":
        raise ConfigError("REDIS_TLS_CA_FILE: only used with a rediss:// REDIS_URL")
    try:
        ssl.create_default_context(cafile=path)
    except OSError as exc:  # ssl.SSLError is an OSError too
        raise ConfigError(f"REDIS_TLS_CA_FILE: cannot load {path}: {exc.strerror or exc}") from None
    return Path(path)


def _check_console_tokens(settings: Settings) -> None:
    if settings.console_tokens and not settings.api_tokens:
        raise ConfigError("CONSOLE_TOKEN: needs API_TOKEN (without it every endpoint is open)")
    if set(settings.console_tokens) & set(settings.api_tokens):
        raise ConfigError("CONSOLE_TOKEN: must differ from every API_TOKEN")


def _redis_url(url: str, mode: str) -> str:
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme not in REDIS_SCHEMES:
        raise ConfigError(f"REDIS_URL: scheme must be one of {', '.join(REDIS_SCHEMES)}")
    if mode != "standalone" and scheme == "unix":
        raise ConfigError(f"REDIS_URL: REDIS_MODE={mode} needs redis:// or rediss://")
    hosts = parts.netloc.rpartition("@")[2]
    for address in hosts.split(",") if mode == "sentinel" else [hosts]:
        port = address.rpartition("]")[2].partition(":")[2]
        if port and not (port.isascii() and port.isdigit() and 0 < int(port) <= 65535):
            raise ConfigError(f"REDIS_URL: port {port!r} is not a number from 1 to 65535")
    query = parse_qs(parts.query)
    if "db" in query:
        db = query["db"][0]
    else:  # a unix socket's path is the socket's
        db = "" if scheme == "unix" else unquote(parts.path).strip("/")
    if db and not (db.isascii() and db.isdigit()):
        raise ConfigError(f"REDIS_URL: database {db!r} is not a number")
    if mode == "cluster" and db.strip("0"):
        raise ConfigError("REDIS_URL: Redis Cluster has only database 0")
    return url


def _check_http_url(name: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name}: expected an http(s) URL, got {url!r}")


def _multipliers(raw: str) -> tuple[float, float, float]:
    try:
        values = [float(v) for v in raw.split(",")]
    except ValueError:
        raise ConfigError(f"LEVEL_MULTIPLIERS: expected three numbers, got {raw!r}") from None
    if len(values) != 3 or not 0 < values[0] < values[1] < values[2] < math.inf:
        raise ConfigError("LEVEL_MULTIPLIERS: expected three increasing positive finite numbers")
    return values[0], values[1], values[2]
