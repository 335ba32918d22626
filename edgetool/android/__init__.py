"""Wear OS watches: LiteRT's benchmark_model is the runner, the battery fuel gauge the meter."""
