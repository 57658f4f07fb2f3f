"""Development and test tooling: the dev stack, embedded Redis, sample events, benchmarks."""
