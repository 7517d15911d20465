"""Stand-alone measurements behind benchmarks/RESULTS.md and the README (launch counts, host time, memory, shard
bytes, the score kernels' launch tuning); each a script, run from the repository root."""
