"""Smartwatch targets: Bangle.js (Espruino over BLE UART)."""
