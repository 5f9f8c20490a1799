"""Conveyor's benchmark harness (not a test): see benchmarks/README.md."""
