"""One-off analyses of the tiny models behind the tables of docs/RESULTS.md (each a script: python -m
benchmarks.analyses.NAME --help)."""
