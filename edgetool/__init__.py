"""edgetool: deploy ML models to edge devices and measure latency and energy."""

__version__ = "0.1.0"
