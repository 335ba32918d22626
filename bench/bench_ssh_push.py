#!/usr/bin/env python3
"""SSH push throughput: SshTransport.put vs OpenSSH scp, both to the loopback sshd.

Baseline: `scp -i KEY -P PORT -o UserKnownHostsFile=... -o StrictHostKeyChecking=yes
-o BatchMode=yes FILE user@127.0.0.1:DIR/NAME` (a new process per copy, so its time
includes the SSH handshake).
Candidate: SshTransport.put(FILE, DIR/NAME) on a connection opened once (as a deploy
does), with a fresh remote name each repetition so it really uploads. put = put_many of
one file = one device command: it starts while the host hashes the file, answers what is
already there (the probe) on its first line, then receives the file on its stdin into a
fresh .part, hashed *on the device* as it is written, renamed on a match (verify while
receiving).

Repetitions run scp, put, ..., scp round-robin, ending with scp; each put is compared
with the scp run just before and just after it (throughput ratio = scp s / put s), and
ratio = the median of those 2 x reps ratios; goal >= 1.2.
Also reported (same interleaved loop): the receiving command without the local hash
(`_send_verified`: start, answer, stream + verify + rename) and connect + put + close
(handshake included, like scp), then put timed step by step.
`--explore` instead sweeps the transport knobs around edgetool's current settings
(cipher, TCP_NODELAY, CHUNK, SFTP window/packet for `get`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _common import (
    Result,
    arm_ratios,
    fmt,
    interleave,
    loopback,
    median,
    scratch,
    ssh_dest,
    ssh_options,
)

if TYPE_CHECKING:
    from edgetool.transport.ssh import SshTransport

GOAL = 1.2
MB = 1_000_000


def make_blob(path: Path, size: int) -> Path:
    if not path.is_file() or path.stat().st_size != size:
        with path.open("wb") as handle:
            remaining = size
            while remaining:
                block = os.urandom(min(remaining, 1 << 20))
                handle.write(block)
                remaining -= len(block)
    return path


def open_ssh() -> SshTransport:
    """A fresh SshTransport to the loopback target (as `edgetool deploy` opens it)."""
    from edgetool.targets import load_target, open_transport
    from edgetool.transport.ssh import SshTransport

    transport = open_transport(load_target("loopback"))
    assert isinstance(transport, SshTransport)
    return transport


def settings_in_effect(transport: SshTransport) -> dict[str, Any]:
    """What edgetool's connection actually negotiated / set (checked, not assumed)."""
    from edgetool.transport import ssh

    t = transport._transport()
    sock = t.sock
    nodelay = (
        bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        if isinstance(sock, socket.socket)
        else None
    )
    return {
        "cipher": t.local_cipher,
        "mac": t.local_mac,
        "tcp_nodelay": nodelay,
        "server": t.remote_version,
        "sftp_window": ssh.SFTP_WINDOW,
        "sftp_packet": ssh.SFTP_PACKET,
    }


def scp_argv(state: dict[str, Any], local: Path, remote: str, extra: list[str]) -> list[str]:
    return [
        "scp",
        "-q",
        *ssh_options(state, "-P"),
        *extra,
        str(local),
        f"{ssh_dest(state)}:{remote}",
    ]


def run_scp(state: dict[str, Any], local: Path, remote: str, extra: Sequence[str] = ()) -> float:
    argv = scp_argv(state, local, remote, list(extra))
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)
    return time.perf_counter() - start


def remove_remote(transport: SshTransport, *paths: str) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            transport.sftp().remove(path)


def login_shell_seconds(reps: int = 5) -> float:
    """The user's login shell started the way sshd starts it for a command (bash then
    sources ~/.bashrc), run locally: the loopback "device" is this host and this user."""
    user = pwd.getpwuid(os.getuid())
    shell = user.pw_shell or "/bin/sh"
    env = {  # roughly the environment sshd gives a command (not this process's)
        "HOME": user.pw_dir,
        "USER": user.pw_name,
        "LOGNAME": user.pw_name,
        "SHELL": shell,
        "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/games",
        "SSH_CLIENT": "127.0.0.1 50000 22",
    }
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        subprocess.run([shell, "-c", "true"], env=env, check=True, stdin=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return median(times)


def skip_bashrc(state: dict[str, Any]) -> None:
    """Reconfigure *this benchmark's* loopback sshd so bash does not source ~/.bashrc for
    commands (SetEnv SHLVL=1: bash only sources it for sshd when SHLVL < 2 after its own
    increment). Shows the device-environment share of put; nothing else is touched."""
    import signal

    from edgetool.emulate.sshd import LoopbackSshd

    config = LoopbackSshd("loopback").dir / "sshd_config"
    if not config.is_file():
        raise SystemExit(f"--plain-shell: {config} not found")
    config.write_text(config.read_text() + "SetEnv SHLVL=1\n")
    os.kill(int(state["pid"]), signal.SIGHUP)  # sshd re-executes itself, same pid
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.2)
        with contextlib.suppress(Exception):
            probe = open_ssh()
            try:
                if probe.run_checked(["sh", "-c", "echo $SHLVL"]).strip() == "1":
                    return
            finally:
                probe.close()
    raise SystemExit("--plain-shell: the sshd did not come back with SetEnv SHLVL=1")


def breakdown(transport: SshTransport, blob: Path, remote: str) -> dict[str, float]:
    """The steps of FileTransport.put_many for one file, timed one by one (same calls,
    same order, but in sequence: put hashes while the device command starts), plus
    reference costs that explain them."""
    from edgetool.files import file_sha256
    from edgetool.transport.base import Delivery

    steps: dict[str, float] = {}

    def step(name: str, fn: Callable[[], object]) -> object:
        start = time.perf_counter()
        out = fn()
        steps[name] = time.perf_counter() - start
        return out

    receiver: list[Delivery] = []

    def start_and_answer() -> object:
        receiver.append(transport.deliver([remote]))
        return receiver[0].existing()

    step("receiving command: start + answer (absent)", start_and_answer)
    sha = str(step("local sha256 (overlapped in put)", lambda: file_sha256(blob)))
    try:
        step(
            "receiving command: stream, sha256, rename",
            lambda: receiver[0].send([(blob, remote, sha)], lambda _path: None),
        )
    finally:
        receiver[0].close()
    steps["sum of the steps"] = sum(steps.values())
    step("[ref] remote command `true`", lambda: transport.run_checked(["true"]))
    step(
        "[ref] remote `python -c pass`",
        lambda: transport.run_checked([transport.python, "-c", "pass"]),
    )
    steps["[ref] login shell + ~/.bashrc, local"] = login_shell_seconds()  # a median of 5
    return steps


def main_bench(args: argparse.Namespace) -> int:
    from edgetool.files import file_sha256

    size = args.mb * MB
    with scratch() as root, loopback() as state:
        blob = make_blob(root / f"blob-{args.mb}mb.bin", size)
        device = state["workdir"] + "/bench-push"
        if args.plain_shell:
            skip_bashrc(state)
        transport = open_ssh()
        try:
            settings = settings_in_effect(transport)
            shell = "no ~/.bashrc (--plain-shell)" if args.plain_shell else "as configured"
            print(
                f"ssh push: {args.mb} MB random file, {args.reps} reps, device login shell "
                f"{shell}; edgetool's connection: "
                + ", ".join(f"{k}={v}" for k, v in settings.items()),
                flush=True,
            )
            transport.makedirs(device)
            # Untimed warm-up of both paths (page cache, sshd/sftp code, first SFTP channel).
            run_scp(state, blob, f"{device}/warm-scp.bin")
            transport.put(blob, f"{device}/warm-put.bin")
            remove_remote(transport, f"{device}/warm-scp.bin", f"{device}/warm-put.bin")
            connect_s: list[float] = []

            def scp(i: int) -> float:
                remote = f"{device}/scp-{i}.bin"
                seconds = run_scp(state, blob, remote)
                remove_remote(transport, remote)
                return seconds

            def put(i: int) -> float:
                remote = f"{device}/put-{i}.bin"
                start = time.perf_counter()  # whole put: hash, answer, stream, verify, rename
                result = transport.put(blob, remote)
                seconds = time.perf_counter() - start
                assert not result.skipped and result.bytes_sent == size
                remove_remote(transport, remote)
                return seconds

            sha = file_sha256(blob)

            def receive(i: int) -> float:
                remote = f"{device}/receive-{i}.bin"
                start = time.perf_counter()
                transport._send_verified([(blob, remote, sha)], lambda _path: None)
                seconds = time.perf_counter() - start
                remove_remote(transport, remote)
                return seconds

            def fresh_put(i: int) -> float:
                remote = f"{device}/fresh-{i}.bin"
                start = time.perf_counter()
                other = open_ssh()
                connect_s.append(time.perf_counter() - start)
                try:
                    other.put(blob, remote)
                finally:
                    other.close()
                seconds = time.perf_counter() - start
                remove_remote(transport, remote)
                return seconds

            series = interleave(
                args.reps,
                {"scp": scp, "put": put, "receive": receive, "connect+put": fresh_put},
                "seconds",
            )
            steps = breakdown(transport, blob, f"{device}/breakdown.bin")
            remove_remote(transport, f"{device}/breakdown.bin")
            tiny = make_blob(root / "tiny.bin", 3)
            scp_tiny = median([run_scp(state, tiny, f"{device}/tiny.bin") for _ in range(3)])
            remove_remote(transport, f"{device}/tiny.bin")
        finally:
            transport.close()

    med = {name: median(values) for name, values in series.items()}
    mbps = {name: args.mb / seconds for name, seconds in med.items()}
    # Throughput ratio = scp time / arm time, over the adjacent (scp, arm) pairs.
    ratios = arm_ratios(series, "scp", throughput=True)
    ratio = ratios["put"]
    print(f"\n{'arm':<14}{'median s':>10}{'MB/s':>9}{'vs scp':>8}   reps (s)")
    for name, values in series.items():
        vs = f"{ratios[name]:>8.3f}" if name in ratios else f"{'1':>8}"
        print(f"{name:<14}{med[name]:>10.3f}{mbps[name]:>9.1f}{vs}   {fmt(values, 3)}")
    print("(vs scp = median of scp s / arm s over each arm run and the scp runs around it)")
    print(f"paramiko connect (handshake + auth): median {median(connect_s):.3f} s")
    print(f"scp of a 3-byte file (its fixed cost): median {scp_tiny:.3f} s")
    print("\nput broken into its steps (one pass each):")
    for name, seconds in steps.items():
        print(f"  {name:<40}{seconds * 1e3:9.1f} ms")
    print(
        f"\nRATIO put/scp throughput = {ratio:.3f}  (goal >= {GOAL})  "
        f"{'MET' if ratio >= GOAL else 'MISSED'}"
    )
    print(
        "      " + ", ".join(f"{name}/scp = {ratios[name]:.3f}" for name in ratios if name != "put")
    )
    Result(
        name="ssh_push",
        ratio=ratio,
        goal=f">= {GOAL}",
        met=ratio >= GOAL,
        details={
            "mb": args.mb,
            "reps": args.reps,
            "plain_shell": args.plain_shell,
            "settings": settings,
            "median_s": med,
            "mb_per_s": mbps,
            "series_s": series,
            "ratios_vs_scp": ratios,
            "paramiko_connect_s": median(connect_s),
            "scp_tiny_s": scp_tiny,
            "put_steps_ms": {k: v * 1e3 for k, v in steps.items()},
        },
    ).emit()
    return 0


# --- exploration ---------------------------------------------------------------------


@dataclass
class Variant:
    """One departure from edgetool's current transport settings (None = as shipped)."""

    label: str
    ciphers: tuple[str, ...] | None = None
    chunk: int | None = None
    window: int | None = None
    packet: int | None = None
    nodelay: bool = True
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    get: bool = False
    get_times: list[float] = field(default_factory=list)
    negotiated: str = ""


@contextlib.contextmanager
def patched(obj: object, name: str, value: object) -> Iterator[None]:
    if value is None:
        yield
        return
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def measure_variant(v: Variant, blob: Path, sha: str, device: str, i: int) -> None:
    import paramiko

    from edgetool.transport import ssh

    # edgetool's transport factory reorders what paramiko offers (GCM first); offering
    # one cipher only pins it.
    with patched(paramiko.Transport, "_preferred_ciphers", v.ciphers):
        transport = open_ssh()
    try:
        v.negotiated = transport._transport().local_cipher
        if not v.nodelay:
            sock = transport._transport().sock
            if isinstance(sock, socket.socket):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        with patched(ssh, "SFTP_WINDOW", v.window), patched(ssh, "SFTP_PACKET", v.packet):
            transport.sftp()
        remote = f"{device}/x-{i}.bin"
        with patched(ssh, "CHUNK", v.chunk):
            cpu0, t0 = time.process_time(), time.perf_counter()
            transport._send_verified([(blob, remote, sha)], lambda _path: None)
            v.times.append(time.perf_counter() - t0)
            v.cpu.append(time.process_time() - cpu0)
        arrived = transport.probe([remote])[remote]["sha256"]
        if arrived != sha:
            raise SystemExit(f"{v.label}: upload arrived corrupted ({arrived} != {sha})")
        if v.get:
            back = blob.with_suffix(".back")
            t0 = time.perf_counter()
            transport.get(remote, back)
            v.get_times.append(time.perf_counter() - t0)
            back.unlink()
        remove_remote(transport, remote)
    finally:
        transport.close()


def explore(args: argparse.Namespace) -> int:
    from edgetool.files import file_sha256

    variants = [
        Variant("as shipped: aes128-gcm, NODELAY, win 2M", get=True),
        Variant("cipher aes128-ctr + hmac-sha2-256 (old)", ciphers=("aes128-ctr",)),
        Variant("cipher aes256-gcm@openssh.com", ciphers=("aes256-gcm@openssh.com",)),
        Variant("no TCP_NODELAY", nodelay=False),
        Variant("CHUNK 256K", chunk=256 << 10),
        Variant("CHUNK 4M", chunk=4 << 20),
        Variant("SFTP_WINDOW 2M (paramiko default)", window=2 << 20, get=True),
        Variant("SFTP_WINDOW 16M (old)", window=16 << 20, get=True),
        Variant("SFTP_PACKET 256K", packet=256 << 10, get=True),
    ]
    scp_variants: dict[str, list[str]] = {
        "scp default (chacha20-poly1305)": [],
        "scp -c aes128-gcm@openssh.com": ["-c", "aes128-gcm@openssh.com"],
    }
    scp_times: dict[str, list[float]] = {name: [] for name in scp_variants}
    size = args.mb * MB
    with scratch() as root, loopback() as state:
        blob = make_blob(root / f"blob-{args.mb}mb.bin", size)
        sha = file_sha256(blob)
        device = state["workdir"] + "/bench-explore"
        keeper = open_ssh()
        keeper.makedirs(device)

        def scp_arm(name: str, i: int) -> None:
            remote = f"{device}/scp-{i}.bin"
            scp_times[name].append(run_scp(state, blob, remote, scp_variants[name]))
            remove_remote(keeper, remote)

        arms: list[Callable[[int], None]] = [
            *(lambda i, v=v: measure_variant(v, blob, sha, device, i) for v in variants),
            *(lambda i, n=n: scp_arm(n, i) for n in scp_variants),
        ]
        try:
            for i in range(args.reps):
                # Rotate the starting arm each repetition so no arm always runs first.
                shift = (i * 5) % len(arms)
                for arm in arms[shift:] + arms[:shift]:
                    arm(i)
                print(f"  explore rep {i + 1}/{args.reps} done", flush=True)
        finally:
            keeper.close()
    base = median(variants[0].times)
    print(f"\nreceiving command, {args.mb} MB (no handshake), median of {args.reps}")
    print(f"{'variant':<50}{'s':>7}{'MB/s':>8}{'vs ship':>9}{'cpu s':>7}{'get s':>8}  negotiated")
    for v in variants:
        s = median(v.times)
        get = f"{median(v.get_times):>8.3f}" if v.get_times else f"{'':>8}"
        print(
            f"{v.label:<50}{s:>7.3f}{args.mb / s:>8.1f}{base / s:>9.2f}{median(v.cpu):>7.2f}"
            f"{get}  {v.negotiated}"
        )
    print(f"\nscp of {args.mb} MB (new process, handshake included), median of {args.reps}")
    for name, values in scp_times.items():
        s = median(values)
        print(f"{name:<50}{s:>7.3f}{args.mb / s:>8.1f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=7, help="ABAB repetitions [7]")
    parser.add_argument("--mb", type=int, default=50, help="file size in MB [50]")
    parser.add_argument(
        "--explore", action="store_true", help="sweep transport knobs around the shipped ones"
    )
    parser.add_argument(
        "--plain-shell",
        action="store_true",
        help="the loopback sshd's commands skip ~/.bashrc (shows the device-environment cost)",
    )
    args = parser.parse_args(argv)
    return explore(args) if args.explore else main_bench(args)


if __name__ == "__main__":
    sys.exit(main())
