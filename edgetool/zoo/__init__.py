"""Small models that edgetool generates itself (no downloads, no training frameworks)."""
