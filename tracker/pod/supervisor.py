"""`tracker pod`: prepare one pod's environment and exec supervisord in the foreground.

`tracker ctl ...`: supervisorctl for that same pod (same RUN_DIR).

Both use the supervisord configuration shipped in the package (``tracker/pod/conf/``), so they
work from any directory; SUPERVISOR_CONFIG names another file.
"""

from __future__ import annotations

import importlib.resources
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from tracker.errors import ConfigError
from tracker.settings import Settings


def _bin(name: str) -> str:
    """A console script installed beside this interpreter, else from PATH."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        raise ConfigError(f"{name}: not found; install the project (pip install .)")
    return found


def packaged_config() -> Path:
    """The supervisord.conf inside the installed package."""
    return Path(
        str(importlib.resources.files("tracker").joinpath("pod", "conf", "supervisord.conf"))
    )


def tracker_programs(settings: Settings) -> tuple[str, ...]:
    """The tracker's own supervisord programs this pod runs."""
    return ("api", "sweeper") if settings.sweeper_delivers else ("api", "sweeper", "consumer")


def pod_environment(settings: Settings, env: Mapping[str, str]) -> dict[str, str]:
    """Every variable supervisord.conf expands, derived from the validated settings."""
    run_dir = settings.run_dir.resolve()
    embedded = settings.redis_embedded
    out = dict(env)
    out.update(
        RUN_DIR=str(run_dir),
        PROMETHEUS_MULTIPROC_DIR=str(settings.metrics_dir.resolve()),
        TRACKER_PYTHON=sys.executable,
        CONSUMER_PROCESSES=str(settings.consumer_processes),
        API_PROCESSES=str(settings.api_processes),
        # numprocs of the programs the pod may not run (0: the program has no process)
        POD_CONSUMER_PROCESSES=str(0 if settings.sweeper_delivers else settings.consumer_processes),
        POD_REDIS_PROCESSES="1" if embedded else "0",
        REDIS_LOG=str(run_dir / "redis.log") if settings.log_format == "json" else "/dev/stdout",
        REDIS_DATA_DIR=str(Path(env.get("REDIS_DATA_DIR") or run_dir.parent / "redis").resolve()),
        REDIS_SERVER=shutil.which("redis-server") or "redis-server",
    )
    if "REDIS_URL_FILE" not in env:  # else the roles read the file themselves
        out["REDIS_URL"] = settings.redis_url
    if embedded and shutil.which("redis-server") is None:
        raise ConfigError(
            "redis-server: not on PATH; install it (apt-get install redis-server) or set REDIS_URL"
        )
    return out


def _config(env: Mapping[str, str]) -> str:
    named = env.get("SUPERVISOR_CONFIG", "").strip()
    conf = Path(named) if named else packaged_config()
    if not conf.is_file():
        raise ConfigError(f"SUPERVISOR_CONFIG: {conf} is not a file")
    return str(conf.resolve())


def wipe(directory: Path) -> None:
    """Empty a directory (it may be a mount point, so it is kept), creating it if missing."""
    directory.mkdir(parents=True, exist_ok=True)
    for entry in directory.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def run_pod(settings: Settings, env: Mapping[str, str]) -> None:
    """Wipe the metrics dir, create the run dirs, and become supervisord."""
    pod_env = pod_environment(settings, env)
    conf = _config(env)
    wipe(Path(pod_env["PROMETHEUS_MULTIPROC_DIR"]))
    Path(pod_env["RUN_DIR"]).mkdir(parents=True, exist_ok=True)
    if pod_env["POD_REDIS_PROCESSES"] != "0":
        Path(pod_env["REDIS_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
    supervisord = _bin("supervisord")
    os.execve(supervisord, [supervisord, "--nodaemon", "-c", conf, *_own_log(settings)], pod_env)


def _own_log(settings: Settings) -> list[str]:
    """supervisord's own lines are plain text: with LOG_FORMAT=json they go to a file in
    RUN_DIR instead of the pod's JSON stream (which shows each exit through the listener)."""
    if settings.log_format != "json":
        return []
    log = settings.run_dir.resolve() / "supervisord.log"
    return [
        "--silent",
        "--logfile",
        str(log),
        "--logfile_maxbytes",
        "10MB",
        "--logfile_backups",
        "1",
    ]


def run_ctl(settings: Settings, env: Mapping[str, str], args: list[str]) -> None:
    pod_env = pod_environment(settings, env)
    supervisorctl = _bin("supervisorctl")
    os.execve(supervisorctl, [supervisorctl, "-c", _config(env), *args], pod_env)
