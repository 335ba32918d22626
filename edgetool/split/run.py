"""One split run: the model's head on the target, its tail on the server, the crossing
bytes over a real (optionally shaped) TCP link, per link × cut point × codec.

The host drives every inference in lockstep: `go` to the head runner, its payload across
the link, the payload to the tail runner, its reply back across the link. Each runner
times its own work on its own clock; the link is timed here, both ends being sockets of
this process. Every (cut, codec) is measured in each repetition with fresh processes, in
an order that reverses every other repetition, so a drift in the machine's speed falls
on all of them alike."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from edgetool import paths
from edgetool.errors import (
    DeviceError,
    EdgetoolError,
    Interrupted,
    ModelError,
    UsageError,
    VerificationFailed,
)
from edgetool.export.artifact import Artifact
from edgetool.files import file_sha256, write_json_atomic
from edgetool.flows.base import connect, push
from edgetool.flows.journal import artifact_info
from edgetool.flows.linux import linux_target_info
from edgetool.power.recorder import EnergyRecorder
from edgetool.results.manifest import RunManifest, Summary, TargetInfo
from edgetool.results.split import DEVICE_ONLY, SERVER_ONLY, SPLIT_JOURNAL, summarize
from edgetool.results.store import POWER, RunWriter, new_run_id, read_power
from edgetool.runner import split_runner
from edgetool.split.energy import open_split_meter, route_energy
from edgetool.split.link import Channel, LinkProfile, open_link
from edgetool.split.settings import SplitObserver, SplitSettings
from edgetool.targets import Target, device_path
from edgetool.transport import FileTransport
from edgetool.transport.base import Process

SPLIT_RUNNER = Path(split_runner.__file__)
FED = 16
"""Test examples the head cycles through: real data, so zstd's bytes and the tail's
top-1 vary as they would, at a file size any device takes."""


@dataclass(frozen=True)
class Route:
    """One measured configuration: where the model is cut and how the crossing tensor
    travels. Device-only runs the whole model as the head and sends nothing."""

    cut: str
    codec: str
    head: str  # the head's path on the device, or "-" (server-only: the input crosses)
    tail: str | None  # the tail's path on the server (None: device-only)
    device_params: str | None  # the codec's calibration on the device
    server_params: str | None  # ... and on the server
    shape: tuple[int, ...]
    dtype: str

    @property
    def label(self) -> str:
        return self.cut if self.cut == DEVICE_ONLY else f"{self.cut} · {self.codec}"


@dataclass
class SplitOutcome:
    run_dir: Path
    run_id: str
    manifest: RunManifest
    summary: Summary

    @property
    def plan(self) -> dict[str, Any]:
        """Server, links (with the shaper's facts), cut points, codecs, accuracy cost."""
        return self.manifest.split or {}

    @property
    def figures(self) -> dict[str, Any]:
        """Per link × cut × codec `rows`, the `best` route and the `crossover` per link."""
        return self.summary.split or {}


def measure(
    target: Target,
    server: Target,
    artifact: Artifact,
    links: Sequence[LinkProfile],
    settings: SplitSettings,
    results_root: Path | None = None,
    observer: SplitObserver | None = None,
) -> SplitOutcome:
    """Cut, check, calibrate, then measure every route over every link; the run
    directory keeps every inference measured, also when something fails midway."""
    obs = observer or SplitObserver()
    recorder = None
    if settings.energy:  # a meter that cannot be had fails before anything is exported
        recorder = open_split_meter(
            target, settings.idle_seconds, lambda samples: writer.append_power(samples)
        )
    try:
        plan = prepare(artifact, settings, obs)
    except BaseException:
        if recorder is not None:
            recorder.meter.close()
        raise
    writer = RunWriter(
        results_root or paths.results_dir(),
        new_run_id(results_root or paths.results_dir(), target.name, f"{artifact.path.stem}-split"),
        RunManifest(
            target=_target_info(target),
            artifact=artifact_info(artifact),
            settings=_settings_record(settings),
            split=plan.manifest_section(server, links),
        ),
    )  # fmt: skip
    journal = (writer.dir / SPLIT_JOURNAL).open("a", encoding="utf-8")
    records: list[dict[str, Any]] = []
    failure: EdgetoolError | None = None
    try:
        with connect(target) as device, connect(server) as host:
            obs.connected(f"{device.description} → {host.description}")
            needs = ("numpy", "onnxruntime") + (
                ("zstandard",) if any(c.endswith("+zstd") for c in settings.codecs) else ()
            )
            for role, transport in (("device", device), ("server", host)):
                _check_modules(transport, role, needs)
            routes = plan.push(target, device, server, host, obs)
            writer.manifest.target.transport = device.description  # type: ignore[union-attr]
            writer.save()
            if recorder is not None:
                obs.metering(recorder.meter.label, settings.idle_seconds)
                recorder.before()
            total = len(links) * settings.repeat * len(routes) * settings.inferences
            for link in links:
                obs.stage(f"link {link.describe()}")
                with open_link(link) as channel:
                    writer.manifest.split["links"][link.name]["facts"] = channel.facts  # type: ignore[index]
                    writer.save()
                    for rep in range(settings.repeat):
                        order = routes if rep % 2 == 0 else routes[::-1]
                        for route in order:
                            for record in _measure_route(
                                device, host, channel, route, link.name, rep, plan, settings
                            ):
                                _append(journal, record)
                                records.append(record)
                                obs.measured(len(records), total, f"{link.name}: {route.label}")
                            if recorder is not None:
                                recorder.drain()
            if recorder is not None:
                recorder.after()
    except KeyboardInterrupt as exc:
        failure = Interrupted(f"interrupted after {len(records)} inferences")
        failure.__cause__ = exc
    except EdgetoolError as exc:
        failure = exc
    finally:
        journal.close()
        if recorder is not None:
            recorder.meter.close()
    summary = Summary(count=len(records))
    if records:
        summary.split = summarize(records, plan.link_figures(links))
        if recorder is not None:
            failure = failure or _add_energy(recorder, writer, summary.split, records)
    status = "complete" if failure is None else ("partial" if records else "failed")
    writer.finish(status, summary, None if failure is None else str(failure))
    if failure is not None:
        if records:
            failure.hint = (
                f"The {len(records)} inferences measured are kept: "
                f"edgetool results show {writer.run_id}"
            )
        raise failure
    return SplitOutcome(writer.dir, writer.run_id, writer.manifest, summary)


def _add_energy(
    recorder: EnergyRecorder,
    writer: RunWriter,
    figures: dict[str, Any],
    records: Sequence[Mapping[str, Any]],
) -> EdgetoolError | None:
    """Each row's device energy into the figures; a failure keeps the times (run partial)."""
    writer.manifest.power = recorder.manifest_entry()
    writer.save()
    try:
        about, energy = route_energy(recorder, records, read_power(writer.dir / POWER))
    except EdgetoolError as exc:
        figures["energy"] = {"meter": recorder.meter.label, "error": str(exc)}
        return exc
    figures["energy"] = about
    for row in figures["rows"]:
        row["energy"] = energy.get((row["link"], row["cut"], row["codec"]))
    return None


_FIND_MODULES = (
    "import importlib.util, json, sys\n"
    "print(json.dumps([m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]))"
)


def _check_modules(transport: FileTransport, role: str, modules: Sequence[str]) -> None:
    """Refuse before the first route rather than fail at the first route that needs a
    module the side lacks (zstandard is not in a provisioned device's default list)."""
    out = transport.run_checked([transport.python, "-c", _FIND_MODULES, *modules])
    try:
        missing = json.loads(out.strip().splitlines()[-1]) if out.strip() else []
    except ValueError:
        missing = []
    if missing:
        zstd = (
            " (the +zstd codecs need it; or leave them out with --codec)"
            if ("zstandard" in missing)
            else ""
        )
        raise DeviceError(
            f"the {role} ({transport.description}) has no {', '.join(missing)}{zstd}",
            hint="Install it there, or add it to the target's [provision] packages and run "
            "edgetool provision.",
        )


def _target_info(target: Target) -> TargetInfo:
    """The device's facts as a deploy records them (emulated, time base): a reader of the
    split tables must know when the device times are an emulator's."""
    info = linux_target_info(target)
    info.name, info.kind, info.description = target.name, target.kind, target.description
    info.source = str(target.source)
    return info


def _append(handle: IO[str], record: Mapping[str, Any]) -> None:
    handle.write(json.dumps(record) + "\n")
    handle.flush()


def _settings_record(settings: SplitSettings) -> dict[str, Any]:
    return {
        "points": settings.points,
        "codecs": list(settings.codecs),
        "links": list(settings.links),
        "repeat": settings.repeat,
        "inferences": settings.inferences,
        "warmup": settings.warmup,
        "seed": settings.seed,
        "threads": settings.threads,
        "input_shapes": {k: list(v) for k, v in settings.input_shapes.items()},
        "baselines": settings.baselines,
    }


# --- the host side: cuts, parity, calibration -----------------------------------------


@dataclass
class Plan:
    """Everything decided on the host before any device is touched."""

    artifact: Artifact
    cuts: list[dict[str, Any]]
    pairs: list[Any]  # split.cuts.SplitPair, in cut order
    params: dict[tuple[str, str], Path]  # (cut, codec) -> calibration JSON
    quality: dict[str, dict[str, Any]]  # cut -> codec -> quality figures
    input_file: Path | None
    input_source: str
    settings: SplitSettings
    workdir: Path
    remote: dict[str, Any] = field(default_factory=dict)
    """Where push() put the runners and the input (paths on each side, interpreters)."""

    def manifest_section(self, server: Target, links: Sequence[LinkProfile]) -> dict[str, Any]:
        return {
            "server": {"name": server.name, "kind": server.kind, "source": str(server.source)},
            "links": {
                link.name: {
                    "bandwidth": link.bandwidth,
                    "bits_per_second": link.bits_per_second,
                    "rtt_ms": link.rtt_ms,
                    "jitter_ms": link.jitter_ms,
                    "loss": link.loss,
                    "source": str(link.source) if link.source else None,
                }
                for link in links
            },
            "cuts": self.cuts,
            "codecs": list(self.settings.codecs),
            "quality": self.quality,
            "input": self.input_source,
        }

    @staticmethod
    def link_figures(links: Sequence[LinkProfile]) -> dict[str, dict[str, Any]]:
        return {
            link.name: {"rtt_ms": link.rtt_ms, "bits_per_second": link.bits_per_second}
            for link in links
        }

    def push(
        self,
        target: Target,
        device: FileTransport,
        server: Target,
        host: FileTransport,
        obs: SplitObserver,
    ) -> list[Route]:
        """Runner, heads, calibrations and input onto the device; runner, tails and
        calibrations onto the server; the routes to measure, with their remote paths."""
        obs.stage("pushing the split runner and models")

        def where(t: Target, local: Path) -> str:
            return device_path(t.workdir, "split", file_sha256(local)[:16], local.name)

        runner_dev = where(target, SPLIT_RUNNER)
        runner_srv = where(server, SPLIT_RUNNER)
        files_dev: list[tuple[Path, str]] = [(SPLIT_RUNNER, runner_dev)]
        files_srv: list[tuple[Path, str]] = [(SPLIT_RUNNER, runner_srv)]
        if self.input_file is not None:
            files_dev.append((self.input_file, where(target, self.input_file)))
        files_dev.append((self.artifact.path, where(target, self.artifact.path)))
        files_srv.append((self.artifact.path, where(server, self.artifact.path)))
        for pair in self.pairs:
            files_dev.append((pair.head, where(target, pair.head)))
            files_srv.append((pair.tail, where(server, pair.tail)))
        for path in self.params.values():
            files_dev.append((path, where(target, path)))
            files_srv.append((path, where(server, path)))
        push(device, _unique(files_dev), obs)
        push(host, _unique(files_srv), obs)
        self.remote = {
            "device_runner": runner_dev,
            "server_runner": runner_srv,
            "device_python": device.python,
            "server_python": host.python,
            "input": where(target, self.input_file) if self.input_file else None,
        }
        routes: list[Route] = []
        if self.settings.baselines:
            routes.append(
                Route(
                    DEVICE_ONLY, "none", where(target, self.artifact.path), None, None, None,
                    (), "",
                )
            )  # fmt: skip
        for cut, pair in zip(self.cuts, self.pairs, strict=True):
            name = cut["tensor"]
            for codec in self.settings.codecs:
                params = self.params.get((name, codec))
                routes.append(
                    Route(
                        name, codec, where(target, pair.head) if name != SERVER_ONLY else "-",
                        where(server, pair.tail),
                        where(target, params) if params else None,
                        where(server, params) if params else None,
                        tuple(cut["shape"]), cut["dtype"],
                    )
                )  # fmt: skip
        return routes


def _unique(files: list[tuple[Path, str]]) -> list[tuple[Path, str]]:
    seen: set[str] = set()
    out = []
    for local, remote in files:
        if remote not in seen:
            seen.add(remote)
            out.append((local, remote))
    return out


def prepare(artifact: Artifact, settings: SplitSettings, obs: SplitObserver) -> Plan:
    """Cut points, head/tail pairs (checked against the whole model), codec
    calibrations and their accuracy cost, all on this host."""
    import numpy as np

    from edgetool.split import cuts as cutting
    from edgetool.split import quality

    if artifact.path.suffix.lower() != ".onnx":
        raise UsageError(
            f"edgetool split cuts ONNX graphs; {artifact.path.name} is not ONNX",
            hint="Give an ONNX model or a zoo name (exported to ONNX by default).",
        )
    unknown = [c for c in settings.codecs if c not in split_runner.CODECS or c == "none"]
    if unknown:
        known = ", ".join(c for c in split_runner.CODECS if c != "none")
        raise UsageError(f"unknown codec {unknown[0]!r} (known: {known})")
    model = artifact.path
    shapes = dict(settings.input_shapes)
    workdir = paths.cache_dir() / "split" / artifact.sha256[:16]
    workdir.mkdir(parents=True, exist_ok=True)
    obs.stage("finding cut points")
    points = cutting.resolve_points(model, settings.points, shapes)
    pairs = [cutting.extract(model, cut, workdir, shapes) for cut in points]
    zoo_name = artifact.manifest.get("model")
    data = quality.recipe_samples(zoo_name) if isinstance(zoo_name, str) else None
    labels: Any = None
    if data is not None:
        calibration, test, labels = data.calibration, data.test, data.labels
        input_source = f"the {zoo_name} recipe's first {FED} test examples, in turn"
    else:
        calibration = _random_batch(model, shapes, settings.seed, 32)
        test = _random_batch(model, shapes, settings.seed + 1000, 16)
        input_source = f"{FED} random inputs (seeds {settings.seed + 1000}…), in turn"
        obs.note(
            "no recipe data for this model: codecs are calibrated on random inputs and "
            "their cost is measured against the whole model's outputs only"
        )
    first = {name: np.ascontiguousarray(values[:1]) for name, values in test.items()}
    obs.stage(f"checking {len(pairs)} head/tail pairs against the whole model")
    cut_records = []
    for pair in pairs:
        parity = cutting.parity(model, pair, first)
        if not parity.ok:
            raise VerificationFailed(
                f"head+tail at {pair.cut.tensor!r} differ from the whole model by "
                f"{parity.max_abs_diff:.3g} (tolerance {parity.tolerance:g})"
            )
        cut_records.append(
            _cut_record(pair.cut) | {
                "parity": {"max_abs_diff": parity.max_abs_diff, "top1_agree": parity.top1_agree}
            }
        )  # fmt: skip
    if settings.baselines:
        server_only = cutting.identity_pair(model, workdir, shapes)
        pairs.insert(0, server_only)
        cut_records.insert(0, _cut_record(server_only.cut) | {"tensor": SERVER_ONLY})
    obs.stage("calibrating codecs and measuring their accuracy cost")
    params: dict[tuple[str, str], Path] = {}
    qualities: dict[str, dict[str, Any]] = {}
    for record, pair in zip(cut_records, pairs, strict=True):
        name = record["tensor"]
        features = quality.head_features(pair.head, calibration)
        for codec in settings.codecs:
            calibrated = split_runner.calibrate(codec, features)
            if calibrated:
                path = workdir / f"{_slug(name)}.{_slug(codec)}.params.json"
                write_json_atomic(path, calibrated)
                params[(name, codec)] = path
        found = quality.codec_quality(
            model, pair.head, pair.tail, settings.codecs, calibration, test, labels
        )
        qualities[name] = {row["codec"]: row for row in quality.quality_rows(found)}
    input_file = workdir / f"input-{_slug(input_source)}.npz"
    save: Any = np.savez  # numpy's stub types **arrays as its own keyword arguments
    save(input_file, **{name: values[:FED] for name, values in test.items()})
    return Plan(
        artifact, cut_records, pairs, params, qualities, input_file, input_source, settings, workdir
    )


def _cut_record(cut: Any) -> dict[str, Any]:
    return {
        "tensor": cut.tensor,
        "shape": list(cut.shape),
        "dtype": cut.dtype,
        "after": cut.after,
        "position": cut.position,
        "fp32_bytes": cut.raw_bytes(32),
    }


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text).strip("_") or "t"


def _random_batch(
    model: Path, shapes: Mapping[str, Sequence[int]], seed: int, count: int
) -> dict[str, Any]:
    """`count` sets of the inputs the runners would make (seeds seed, seed+1, ...),
    batched on axis 0: calibration data for a model that ships none."""
    import numpy as np

    from edgetool.split.cuts import random_inputs

    sets = [random_inputs(model, shapes, seed + k) for k in range(count)]
    return {name: np.concatenate([s[name] for s in sets]) for name in sets[0]}


# --- the device side: one route, one repetition ---------------------------------------


_ERRORS: dict[str, Callable[[str], EdgetoolError]] = {
    "bad_model": ModelError,
    "bad_input": ModelError,
    "codec": UsageError,
    "codec_unavailable": DeviceError,
}


def _expect(lines: Iterator[str], process: Process, event: str, where: str) -> dict[str, Any]:
    """The runner's next event of this kind (other output is skipped); its error line
    or its death as one clear error."""
    for line in lines:
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(message, dict):
            continue
        if message.get("event") == "error":
            make = _ERRORS.get(str(message.get("kind")), DeviceError)
            raise make(f"{where}: {message.get('message', 'split runner failed')}")
        if message.get("event") == event:
            return message
    status = process.wait()
    tail = process.stderr_text().strip().splitlines()[-3:]
    raise DeviceError(
        f"{where}: the split runner ended (status {status}) before its {event!r} line"
        + (f": {' | '.join(tail)}" if tail else "")
    )


def _head_argv(plan: Plan, route: Route, settings: SplitSettings) -> list[str]:
    argv = [
        plan.remote["device_python"], plan.remote["device_runner"], "head",
        "--model", route.head, "--codec", route.codec,
        "--seed", str(settings.seed), "--threads", str(settings.threads),
    ]  # fmt: skip
    if route.device_params:
        argv += ["--params", route.device_params]
    if plan.remote["input"]:
        argv += ["--input", plan.remote["input"]]
    return argv


def _tail_argv(plan: Plan, route: Route, settings: SplitSettings) -> list[str]:
    argv = [
        plan.remote["server_python"], plan.remote["server_runner"], "tail",
        "--model", str(route.tail), "--codec", route.codec,
        "--shape", "x".join(str(d) for d in route.shape), "--dtype", route.dtype,
        "--threads", str(settings.threads),
    ]  # fmt: skip
    if route.server_params:
        argv += ["--params", route.server_params]
    return argv


def _measure_route(
    device: FileTransport,
    host: FileTransport,
    channel: Channel,
    route: Route,
    link: str,
    rep: int,
    plan: Plan,
    settings: SplitSettings,
) -> Iterator[dict[str, Any]]:
    """Fresh head and tail processes, warm-up, then `inferences` measured inferences."""
    head = device.run(_head_argv(plan, route, settings))
    tail: Process | None = None
    try:
        head_lines = head.lines()
        _expect(head_lines, head, "ready", "device")
        tail_lines: Iterator[str] | None = None
        if route.tail is not None:
            tail = host.run(_tail_argv(plan, route, settings))
            tail_lines = tail.lines()
            _expect(tail_lines, tail, "ready", "server")
        for k in range(settings.warmup + settings.inferences):
            t0 = time.perf_counter_ns()
            head.send(b"go\n")
            feature = _expect(head_lines, head, "feature", "device")
            record: dict[str, Any] = {
                "link": link, "cut": route.cut, "codec": route.codec, "rep": rep,
                "i": k - settings.warmup, "t0_ns": t0,
                "device_ns": int(feature["head_ns"]), "encode_ns": int(feature.get("encode_ns", 0)),
                "bytes": int(feature.get("bytes", 0)), "up_ns": 0, "decode_ns": 0, "tail_ns": 0,
                "server_ns": 0, "down_ns": 0, "reply_bytes": 0,
            }  # fmt: skip
            if tail is not None and tail_lines is not None:
                data = str(feature.get("data", ""))
                record["up_ns"] = round(channel.up(base64.b64decode(data)) * 1e9)
                tail.send((json.dumps({"i": k, "data": data}) + "\n").encode())
                result = _expect(tail_lines, tail, "result", "server")
                reply = base64.b64decode(str(result.get("reply", "")))
                record["down_ns"] = round(channel.down(reply) * 1e9)
                record.update(
                    decode_ns=int(result["decode_ns"]),
                    tail_ns=int(result["tail_ns"]),
                    server_ns=int(result["decode_ns"]) + int(result["tail_ns"]),
                    reply_bytes=len(reply),
                    top1=result.get("top1"),
                )
            record["wall_ns"] = time.perf_counter_ns() - t0
            record["e2e_ns"] = sum(
                record[k] for k in ("device_ns", "encode_ns", "up_ns", "server_ns", "down_ns")
            )
            if k >= settings.warmup:
                yield record
        head.send(b"quit\n")
        if tail is not None:
            tail.send(b"quit\n")
            tail.wait()
        head.wait()
    finally:
        for process in (head, tail):
            if process is not None:
                process.kill()  # already gone after a clean end: a no-op
