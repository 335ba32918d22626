"""Split computing: a model cut into a device head and a server tail, and the bytes between."""
