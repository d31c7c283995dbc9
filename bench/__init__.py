"""Benchmarks of the real bot against the test fakes; run `python -m bench --size full`.

Each benchmark is one module with `NAME` and `run(ctx) -> Section` (see `bench.common`), listed
in `bench.__main__.BENCHMARKS`. Helper programs that must run in their own process (the load
generator, the baseline Bolt app, the client worker) are modules too, run with `python -m`.
"""
