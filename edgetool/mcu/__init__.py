"""Microcontroller targets: firmware build, fit check, flashing and the bench protocol."""
