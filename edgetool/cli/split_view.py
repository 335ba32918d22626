"""How a split run reads on a terminal: `edgetool split` prints it when the run ends,
`results show` when asked later (one renderer, so both say the same)."""

from __future__ import annotations

from typing import Any

from edgetool.cli.common import print_whole


def ms(value: float | None) -> str:
    if value is None:
        return "–"
    if value == 0:
        return "0"
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def figure_text(figure: dict[str, Any]) -> str:
    """`12.3 [11.9, 12.8]`: the run-level p50 and its interval, in ms."""
    text = ms(figure.get("estimate_ms"))
    ci = figure.get("ci")
    return f"{text} [{ms(ci[0])}, {ms(ci[1])}]" if ci else text


def quality_text(quality: dict[str, Any] | None) -> str:
    if not quality:
        return ""
    if quality.get("top1") is not None:
        return f"top-1 {100 * quality['top1']:.1f} %"
    if quality.get("psnr_db") is not None:
        return f"PSNR {quality['psnr_db']:.2f} dB"
    if quality.get("max_abs_diff") is not None:
        return f"max diff {quality['max_abs_diff']:.2g}"
    return ""


def _energy_note(out: Any, energy: dict[str, Any]) -> None:
    if energy.get("error"):
        out.print(f"[red]energy: {energy['meter']}: {energy['error']}[/red]")
        return
    if energy.get("estimate"):
        out.print(
            f"device mJ: [yellow]an estimate[/yellow] from declared watts, {energy['window']}; "
            "mean per inference over the repetitions"
        )
        return
    idle = f", idle {energy['idle_w']:.3g} W" if energy.get("idle_w") is not None else ""
    out.print(
        f"[dim]device mJ: mean per inference over the repetitions, {energy['window']}; "
        f"meter {energy['meter']}{idle}[/dim]"
    )


def render(out: Any, manifest: dict[str, Any], summary: dict[str, Any]) -> None:
    """One table per link (rows: baselines and every cut × codec), then the best cut
    and the crossover bandwidth per link."""
    from rich.table import Table

    from edgetool.results.split import energy_text, rate_text

    plan = manifest.get("split") or {}
    figures = summary.get("split") or {}
    qualities = plan.get("quality") or {}
    links = plan.get("links") or {}
    for link in sorted({row["link"] for row in figures.get("rows", [])}):
        profile = links.get(link, {})
        facts = profile.get("facts") or {}
        shaper = f" · shaper {facts['shaper']}" if facts.get("shaper") else ""
        title = (
            f"{link}: {profile.get('bandwidth') or 'unshaped'}, RTT {profile.get('rtt_ms', 0):g} ms"
            f" ± {profile.get('jitter_ms', 0):g}, loss {100 * float(profile.get('loss') or 0):g} %"
            f"{shaper}"
        )
        table = Table(title=title, title_justify="left")
        for column in ("cut", "codec", "bytes", "device", "encode", "up", "server", "down"):
            table.add_column(column, justify="left" if column in ("cut", "codec") else "right")
        table.add_column("end to end, ms p50 [95 % CI]", justify="right")
        rows = [r for r in figures["rows"] if r["link"] == link]
        metered = any(row.get("energy") for row in rows)
        if metered:
            table.add_column("device mJ [95 % CI]", justify="right")
        table.add_column("accuracy")
        order = {"device-only": 0, "server-only": 1}
        rows.sort(key=lambda r: (order.get(r["cut"], 2), r["e2e"]["estimate_ms"]))
        for row in rows:
            quality = (qualities.get(row["cut"]) or {}).get(row["codec"])
            table.add_row(
                row["cut"], row["codec"], str(row["bytes"]),
                *(ms(row[p]["estimate_ms"]) for p in ("device", "encode", "up", "server", "down")),
                figure_text(row["e2e"]),
                *([energy_text(row.get("energy"), "–")] if metered else []),
                quality_text(quality),
            )  # fmt: skip
        print_whole(out, table)
        best = figures.get("best", {}).get(link)
        if best:
            out.print(
                f"best on {link}: {best['cut']} · {best['codec']}, end to end "
                f"{figure_text(best['e2e'])} ms"
            )
        cross = figures.get("crossover", {}).get(link) or {}
        if cross.get("bits_per_second"):
            out.print(
                f"offloading beats device-only above {rate_text(cross['bits_per_second'])} "
                f"at RTT {cross['rtt_ms']:g} ms ({cross['cut']} · {cross['codec']}; modelled "
                "from the measured compute times)"
            )
        elif cross.get("reason"):
            out.print(f"crossover: {cross['reason']}")
        out.print("")
    out.print(
        "[dim]times in ms: p50 of the run's repetition medians; device and server times on "
        "their own clocks, link times on this host's[/dim]"
    )
    energy = figures.get("energy")
    if energy:
        _energy_note(out, energy)
    target = manifest.get("target") or {}
    if target.get("emulated"):
        emulator = target.get("emulator") or "an emulator"
        out.print(
            f"[yellow]device times are emulated[/yellow] ({emulator}): the head ran on "
            f"{target.get('name')}, not on hardware; the crossover is for that device"
        )
