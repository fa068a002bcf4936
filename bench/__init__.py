"""Benchmarks of confluence-stream against its peers and the physical limits.

``python -m bench`` (``make bench``) starts the local services and the emulator, runs
every benchmark and writes ``docs/benchmarks.md`` and ``docs/benchmarks.json``.
"""
