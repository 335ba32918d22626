"""Bench firmware for microcontroller targets: build (make + fit check) below both the MCU
flow that deploys it and the emulator that boots it, so neither imports the other."""
