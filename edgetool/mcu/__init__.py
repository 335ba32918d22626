"""Microcontroller targets: the bench protocol client (the firmware build and fit check are
in edgetool.firmware, the deploy flow in edgetool.flows.mcu)."""
