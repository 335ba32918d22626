"""Emulated devices: each starts and stops like a device and is then used as one."""
