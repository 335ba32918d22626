"""Time `build_report` for a typical run (500 inferences, power, energy) and a large one
(20,000): imports (matplotlib is imported by the report module), then each report.

Run from the repository: `PYTHONPATH=. python bench/bench_report.py`.
"""

from __future__ import annotations

import importlib
import pathlib
import tempfile
import time


def main() -> None:
    start = time.time()
    report = importlib.import_module("edgetool.results.report")
    store = importlib.import_module("edgetool.results.store")
    fixtures = importlib.import_module("tests.unit.test_trace_report")
    imports = time.time() - start
    tmp = pathlib.Path(tempfile.mkdtemp())
    times = []
    for name, n in (("typical", 500), ("large", 20_000)):
        run = store.load_run(fixtures.make_run(tmp, name, n=n))
        start = time.time()
        report.build_report([run])
        times.append(time.time() - start)
    print(f"imports {imports:.2f} s, 500 samples {times[0]:.2f} s, 20000 samples {times[1]:.2f} s")


if __name__ == "__main__":
    main()
