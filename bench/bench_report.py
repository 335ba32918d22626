"""Time `build_report` for a typical run (500 inferences, power, energy) and a large one
(20,000): imports (matplotlib is imported by the report module), then each report.

Run from the repository: `PYTHONPATH=. python bench/bench_report.py`.
"""

import pathlib
import tempfile
import time

t0 = time.time()
from edgetool.results.report import build_report
from edgetool.results.store import load_run
from tests.unit.test_trace_report import make_run

imp = time.time() - t0
tmp = pathlib.Path(tempfile.mkdtemp())
run = load_run(make_run(tmp, "r", n=500))
t = time.time()
build_report([run])
a = time.time() - t
run = load_run(make_run(tmp, "r2", n=20000))
t = time.time()
build_report([run])
b = time.time() - t
print(f"imports {imp:.2f} s, 500 samples {a:.2f} s, 20000 samples {b:.2f} s")
