"""autoprof's benchmark harness: what autoprof costs, idle and capturing, against the alternatives.

Run ``python -m bench`` (full, a few minutes) or ``python -m bench --quick`` (smoke test). Every
figure is a ratio or a difference against a baseline measured in the same run, interleaved with
the configuration it is compared with, as a median over repeats. Results go to
``bench/results/`` as ``results.md`` (tables and targets), ``results.png`` (per-request cost by
configuration) and ``results.json`` (everything measured).
"""
