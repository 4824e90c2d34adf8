"""Benchmarks of the graph core against its peers; see bench/README.md."""
