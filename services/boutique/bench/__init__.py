"""Benchmarks (not tests): `python -m boutique.bench.services` measures the gRPC services."""
