"""Watches (issue 10): what moving a model costs on each link, against the test peers.

1. ADB push throughput: edgetool's verified put over adb-shell (probe, push to `.part`,
   sha256 on the device, rename) vs the real `adb push` client, same file, same ADB
   device peer on 127.0.0.1, interleaved ABAB. Ratio > 0.9 means the verification and
   the pure-Python client cost little next to the platform tool.
2. Bangle.js upload over the Nordic UART Service: payload bytes / bytes on the wire and
   20-byte packets per KB (base64 in JS `Storage.write` lines), for cbnet-classifier
   (int8) and the stepped L2MU (fp32); the Result carries the last one.

Loopback numbers: no radio, no Wi-Fi. They measure the protocol overhead only.

    python bench/bench_watch.py [--mb 16] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench._common import Result, scratch  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def adb_push(root: Path, mb: int, reps: int) -> dict[str, float]:
    from edgetool.testing.adb_peer import AdbPeer
    from edgetool.transport.adb import AdbSettings, AdbTransport

    payload = root / "payload.bin"
    payload.write_bytes(os.urandom(mb << 20))
    adb = shutil.which("adb")
    rates: dict[str, list[float]] = {"edgetool": [], "adb": [], "library": []}
    with AdbPeer(root / "watch", accept_new_keys=True) as peer:
        settings = AdbSettings(host="127.0.0.1", port=peer.port, key=root / "adbkey")
        transport = AdbTransport(settings, "bench")
        server = str(_free_port())
        env = {"HOME": str(root / "adb-home"), "ANDROID_ADB_SERVER_PORT": server,
               "PATH": os.environ["PATH"]}  # fmt: skip
        (root / "adb-home").mkdir(exist_ok=True)
        serial = f"127.0.0.1:{peer.port}"
        if adb:
            subprocess.run([adb, "connect", serial], env=env, capture_output=True, timeout=30)
            subprocess.run([adb, "-s", serial, "wait-for-device"], env=env, timeout=30)
        try:
            for rep in range(reps):
                began = time.perf_counter()
                transport.put(payload, f"/data/local/tmp/bench/e{rep}.bin")
                rates["edgetool"].append(mb / (time.perf_counter() - began))
                # the library's own push on the same connection: no probe, hash or rename
                began = time.perf_counter()
                transport._device.push(str(payload), f"/data/local/tmp/bench/l{rep}.bin")
                rates["library"].append(mb / (time.perf_counter() - began))
                if adb:
                    began = time.perf_counter()
                    remote = f"/data/local/tmp/bench/a{rep}.bin"
                    subprocess.run(
                        [adb, "-s", serial, "push", str(payload), remote],
                        env=env, capture_output=True, timeout=300, check=True,
                    )  # fmt: skip
                    rates["adb"].append(mb / (time.perf_counter() - began))
        finally:
            transport.close()
            if adb:
                subprocess.run([adb, "kill-server"], env=env, capture_output=True, timeout=30)
    out = {
        "edgetool_mb_s": statistics.median(rates["edgetool"]),
        "adb_shell_push_mb_s": statistics.median(rates["library"]),
    }
    out["vs_library"] = out["edgetool_mb_s"] / out["adb_shell_push_mb_s"]
    if rates["adb"]:
        out["adb_client_mb_s"] = statistics.median(rates["adb"])
        out["ratio"] = out["edgetool_mb_s"] / out["adb_client_mb_s"]
    return out


def nus_upload(root: Path, model: str) -> dict[str, float]:
    from edgetool.testing.nus_peer import NusPeer

    env = {**os.environ, "EDGETOOL_CACHE_DIR": os.environ["EDGETOOL_CACHE_DIR"]}
    with NusPeer() as peer:
        targets = root / "targets"
        targets.mkdir(exist_ok=True)
        text = (REPO / "targets" / "bangle2.toml").read_text()
        text = text.replace('"XX:XX:XX:XX:XX:XX"', f'"tcp://127.0.0.1:{peer.port}"')
        (targets / "bangle2.toml").write_text(text)
        env["EDGETOOL_TARGETS"] = str(targets)
        result = subprocess.run(
            [sys.executable, "-m", "edgetool", "deploy", "--target", "bangle2", "--model",
             model, "-n", "5", "--json"],
            env=env, capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"bangle deploy failed: {result.stderr.strip()[-300:]}")
    upload = json.loads(result.stdout)["manifest"]["upload"]
    wire = upload["bytes_sent"]
    return {
        "model_bytes": upload["size"],
        "wire_bytes": wire,
        "payload_per_wire": upload["size"] / wire,
        "packets_per_kb": (wire / 20) / (upload["size"] / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=16)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    with scratch() as root:
        push = adb_push(root, args.mb, args.reps)
        print(f"ADB push {args.mb} MB (median of {args.reps}):")
        print(f"  edgetool verified put (adb-shell)  {push['edgetool_mb_s']:8.1f} MB/s")
        print(f"  adb-shell push alone (no verify)  {push['adb_shell_push_mb_s']:8.1f} MB/s")
        print(f"  verified put / library push       {push['vs_library']:8.2f}")
        if "adb_client_mb_s" in push:
            print(f"  adb push (platform client)        {push['adb_client_mb_s']:8.1f} MB/s")
            print(f"  ratio                             {push['ratio']:8.2f}")
        # cbnet-classifier is :tflite:int8; l2mu is bangle2.toml's stepped l2mu-watch (fp32)
        for model in ("cbnet-classifier", "l2mu"):
            nus = nus_upload(root, model)
            print(f"Bangle.js upload over NUS (--model {model}):")
            print(f"  model {nus['model_bytes']:,} B, on the wire {nus['wire_bytes']:,} B")
            print(f"  payload / wire {nus['payload_per_wire']:.3f}, 20-byte packets per KB "
                  f"{nus['packets_per_kb']:.1f}")  # fmt: skip
        Result(
            "watch_adb_push",
            push.get("ratio", 0.0),
            "edgetool verified put / adb push >= 0.9",
            push.get("ratio", 0.0) >= 0.9,
            {**push, **{f"nus_{k}": v for k, v in nus.items()}},
        ).emit()


if __name__ == "__main__":
    main()
