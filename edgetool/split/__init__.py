"""Split computing: a model's head on the device, its tail on a server, the bytes between."""
