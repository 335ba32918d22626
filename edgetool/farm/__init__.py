"""The device farm: run a plan of models × targets on shared boards.

Boards are shared between people and nightly jobs, so a job holds its device through a
place (`edgetool.farm.places`): a labgrid coordinator's reservation when the lab has one,
otherwise a lock on this host, so that two edgetool processes never use one device at once.
"""
