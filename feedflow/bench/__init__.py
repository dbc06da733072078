"""Benchmarks behind BENCHMARKS.md (`feedflow bench`)."""
