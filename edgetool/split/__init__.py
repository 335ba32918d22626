"""Split computing: a model cut between a device head and a server tail, and the link between."""
