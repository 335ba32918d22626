"""Artifacts: model files identified by content, and (later) the exporters that make them."""
