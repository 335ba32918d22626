"""Test doubles for edgetool's devices and links, public so your own CI can use them too.

Each double speaks the real protocol on a local resource (a pty, a loopback port, a
directory), so the real drivers and transports run against it unchanged and what they
measure can be checked against a known answer. Results measured through a peer are
labelled synthetic wherever the protocol lets the peer say so.

- `edgetool.testing.meters`: PPK2 and UM25C meters on a pty (`start_peer`, or
  `python -m edgetool.testing.meters`), playing back a waveform.
- `edgetool.testing.waveform`: synthetic current waveforms (constant, pulses, sine) with
  exact integrals: the ground truth for energy checks.
- `edgetool.testing.hwmon_peer`: a Linux hwmon INA260 as files, for `[meter] type = "hwmon"`.
- `edgetool.testing.noisy_link`: a TCP proxy flipping bits at a known rate, between
  edgetool and a serial device reached over TCP (`python -m edgetool.testing.noisy_link`).
- `edgetool.testing.adb_peer`: a Wear OS watch's adbd on 127.0.0.1 (a host shell and a
  directory behind it; `python -m edgetool.testing.adb_peer`).
- `edgetool.testing.nus_peer`: a Bangle.js 2 behind a TCP Nordic UART Service bridge,
  playing Espruino's REPL (`python -m edgetool.testing.nus_peer`).

This package imports none of them: import the module you use. None needs an optional
extra to import; the NUS peer needs `tflite-micro` (`edgetool[export]`) only once a model
is loaded into it. Production code never imports this package.
"""
