"""How sizes read to a person: one formatter for the CLI and the flows' fact rows."""

from __future__ import annotations


def human_bytes(size: float | None) -> str:
    """Decimal units (as `df -H` and vendors' datasheets): 1.5 MB = 1,500,000 bytes."""
    if size is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(size) < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000.0
    return f"{size:.1f} GB"


def latency_unit(median_ms: float | None, instructions: bool) -> tuple[str, float]:
    """The unit a latency is shown in and the factor from ms to it. On an instruction time
    base (QEMU -icount) 1 ms of guest clock is 10^6 instructions, shown as such ("64.4 k
    instr", never "0.064 ms"): k below 0.1 M, as the report's plots."""
    if not instructions:
        return "ms", 1.0
    if median_ms is not None and median_ms >= 0.1:
        return "M instr", 1.0
    return "k instr", 1e3
