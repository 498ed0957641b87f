"""Benchmarks of rdzv against torch's etcd pieces (and torch's c10d where it applies).

Run them all with ``python -m benchmarks.run [--quick] [--out DIR]``; each measurement
lives in its own module and never asserts a speed (tests do not either).
"""
