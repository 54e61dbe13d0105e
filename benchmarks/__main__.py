"""Run every benchmark, one after the other: ``python -m benchmarks [NAME ...]``.

Each benchmark measures our code and its bare baseline side by side in one run
and prints ratios (absolute times drift on a shared machine; ratios carry over).
"""

from __future__ import annotations

import importlib
import sys
import time

BENCHMARKS = (
    "bench_breaker",
    "bench_validation",
    "bench_writer",
    "bench_backup",
    "bench_overhead",
    "bench_e2e",
    "bench_stream",
    "bench_postgres",
)


def main(argv: list[str] | None = None) -> None:
    names = argv if argv else list(BENCHMARKS)
    for name in names:
        mod_name = name if name.startswith("bench_") else f"bench_{name}"
        if mod_name not in BENCHMARKS:
            sys.exit(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
        print(f"\n=== {mod_name} ===", flush=True)
        t0 = time.perf_counter()
        importlib.import_module(f"benchmarks.{mod_name}").main([])
        print(f"({mod_name} took {time.perf_counter() - t0:.0f}s)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
