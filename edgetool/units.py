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
