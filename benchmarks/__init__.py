"""Performance benchmarks of rollout (issue 7): ``python -m benchmarks [--events N] [--quick]``.

Each measurement lives in its own module: :mod:`benchmarks.synth` (the input), :mod:`benchmarks.ingest`,
:mod:`benchmarks.latency`, :mod:`benchmarks.memory`, :mod:`benchmarks.e2e`.  None of them is a timed test.
"""
