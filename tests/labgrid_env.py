"""A real labgrid coordinator and exporter on 127.0.0.1, for tests that need places.

    with labgrid_env(tmp_path, {"board-a": ("127.0.0.1", 2201, "root")}) as lab:
        lab.url                      # "127.0.0.1:PORT", for LabgridPlaces / --coordinator
        lab.client("places", "-a")   # labgrid-client -x lab.url places -a

One exporter group per name, holding a `NetworkService` (address, port, username) plus any
`extra_resources`; one place per name matching that group (``EXPORTER/NAME/*``), tagged
``edgetool=NAME`` plus any `tags`. Nothing listens beyond the coordinator's loopback port
(the exported services are only descriptions; no sshd is needed unless a test connects).
Places are created with labgrid-client (its public interface), not by seeding the
coordinator's places.yaml (an internal format).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgetool.farm.places import labgrid_tool, parse_places

EXPORTER = "edgetool-test"
_LG_VARS = ("LG_ENV", "LG_PLACE", "LG_TOKEN", "LG_STATE", "LG_COORDINATOR", "LG_PROXY")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _yaml_scalar(value: Any) -> str:
    """JSON scalars are YAML scalars; quoting keeps '127.0.0.1' a string."""
    return json.dumps(value)


def exporter_yaml(
    services: Mapping[str, tuple[str, int, str]],
    extra_resources: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
) -> str:
    """The exporter's resource file: group NAME → NetworkService (+ extra resources)."""
    lines: list[str] = []
    for name, (address, port, username) in services.items():
        resources: dict[str, Mapping[str, Any]] = {
            "NetworkService": {"address": address, "port": port, "username": username}
        }
        resources.update((extra_resources or {}).get(name, {}))
        lines.append(f"{_yaml_scalar(name)}:")
        for cls, params in resources.items():
            lines.append(f"  {cls}:")
            lines += [f"    {key}: {_yaml_scalar(value)}" for key, value in params.items()]
    return "\n".join(lines) + "\n"


@dataclass
class LabgridEnv:
    """A running coordinator + exporter; `stop()` (or leaving the `with`) ends both."""

    url: str
    workdir: Path
    names: list[str]
    exporter: str = EXPORTER
    coordinator_startup_s: float = 0.0
    """Seconds from spawning labgrid-coordinator until it answered labgrid-client."""
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)

    def client(
        self, *args: str, check: bool = False, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """``labgrid-client -x URL ARGS…`` (text output; `check` raises on failure)."""
        env = {k: v for k, v in os.environ.items() if k not in _LG_VARS}
        proc = subprocess.run(
            [labgrid_tool("labgrid-client"), "-x", self.url, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"labgrid-client {' '.join(args)} failed ({proc.returncode}): "
                f"{proc.stderr.strip() or proc.stdout.strip()}"
            )
        return proc

    def acquired(self) -> set[str]:
        """Names of the places that are acquired right now."""
        out = self.client("-v", "places", check=True).stdout
        return {name for name, info in parse_places(out).items() if info.acquired}

    def reservations(self) -> list[str]:
        """Tokens of every reservation the coordinator still has (any state)."""
        out = self.client("reservations", check=True).stdout
        return [ln.split("'")[1] for ln in out.splitlines() if ln.startswith("Reservation '")]

    def log(self, name: str = "coordinator") -> str:
        """What the coordinator (or "exporter") printed, for assertion messages."""
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Stop the exporter, then the coordinator (idempotent)."""
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self._procs):
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._procs.clear()


def _spawn(argv: list[str], cwd: Path, log_name: str) -> subprocess.Popen[bytes]:
    with open(cwd / f"{log_name}.log", "ab") as log:
        return subprocess.Popen(
            argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )


def _wait_for(what: str, ready: Any, deadline: float, procs: list[Any], env: LabgridEnv) -> None:
    while not ready():
        dead = [p for p in procs if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            reason = "exited" if dead else "timed out"
            raise RuntimeError(
                f"labgrid test env: {what} {reason}\n--- coordinator:\n{env.log()}"
                f"\n--- exporter:\n{env.log('exporter')}"
            )
        time.sleep(0.2)


@contextmanager
def labgrid_env(
    tmp_path: Path,
    services: dict[str, tuple[str, int, str]],
    *,
    tags: Mapping[str, Mapping[str, str]] | None = None,
    extra_resources: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
    timeout: float = 60.0,
) -> Iterator[LabgridEnv]:
    """Coordinator on 127.0.0.1:<free port>, an exporter, one tagged place per service."""
    workdir = tmp_path / "labgrid"
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "exporter.yaml").write_text(exporter_yaml(services, extra_resources))
    deadline = time.monotonic() + timeout
    env = LabgridEnv(url="", workdir=workdir, names=list(services))
    try:
        up = False
        for _attempt in range(3):  # a free port can be taken between probe and bind
            env.url = f"127.0.0.1:{_free_port()}"
            started = time.monotonic()
            coordinator = _spawn(
                [labgrid_tool("labgrid-coordinator"), "-l", env.url], workdir, "coordinator"
            )
            env._procs = [coordinator]
            while not up and coordinator.poll() is None and time.monotonic() < deadline:
                up = env.client("places", timeout=10).returncode == 0
                time.sleep(0 if up else 0.1)
            if up:
                break
            env.stop()
        if not up:
            raise RuntimeError(f"labgrid test env: no coordinator came up\n{env.log()}")
        env.coordinator_startup_s = time.monotonic() - started

        exporter_argv = [labgrid_tool("labgrid-exporter"), "-c", env.url, "-n", EXPORTER]
        exporter_argv += ["--hostname", "127.0.0.1", "exporter.yaml"]
        env._procs.append(_spawn(exporter_argv, workdir, "exporter"))

        def make_place(name: str) -> None:
            place_tags = {"edgetool": name, **(tags or {}).get(name, {})}
            env.client("-p", name, "create", check=True)
            env.client("-p", name, "add-match", f"{EXPORTER}/{name}/*", check=True)
            pairs = [f"{k}={v}" for k, v in place_tags.items()]
            env.client("-p", name, "set-tags", *pairs, check=True)

        with ThreadPoolExecutor(max_workers=max(1, len(services))) as pool:
            list(pool.map(make_place, services))

        wanted = {f"{EXPORTER}/{name}/NetworkService" for name in services}

        def resources_seen() -> bool:
            out = env.client("resources").stdout
            return wanted <= {ln.strip() for ln in out.splitlines()}

        _wait_for("exported resources", resources_seen, deadline, env._procs, env)
        yield env
    finally:
        env.stop()
