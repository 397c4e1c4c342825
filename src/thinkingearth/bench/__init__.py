"""The benchmark harness: task suites, protocols, cost meters and reports.

Public API::

    from thinkingearth.bench import run_bench, list_suites

    result = run_bench("synthetic-lite", "thinkingearth_vit_tiny,resnet18", "bench-out", seeds=3)
    result.report  # bench-out/report.md, beside results.csv and the plots

See :mod:`thinkingearth.bench.runner` for what a run does, :mod:`thinkingearth.bench.suites`
for the suites, :mod:`thinkingearth.bench.meters` for the costs and
:mod:`thinkingearth.bench.report` for the aggregate score.
"""

from thinkingearth.bench.runner import BenchResult, read_results, run_bench
from thinkingearth.bench.suites import Suite, TaskSpec, get_suite, list_suites

__all__ = [
    "BenchResult",
    "Suite",
    "TaskSpec",
    "get_suite",
    "list_suites",
    "read_results",
    "run_bench",
]
