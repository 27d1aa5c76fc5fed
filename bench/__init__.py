"""Benchmarks: speed, memory and link efficiency as ratios measured in one run (issue 8).

``make bench`` (``python -m bench``) writes ``bench/results.json`` and the results table of
``bench/README.md``; ``tests/test_bench_smoke.py`` runs every benchmark at a tiny size.
"""
