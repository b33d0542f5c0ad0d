"""Parts of ``scripts/bench_peers.py``: the tasks every pool runs, and the pools themselves.

A package of its own so that the tasks pickle by reference (``_peers.tasks.noop``)
under every start method: the benchmark puts ``scripts/`` on ``PYTHONPATH`` for
the interpreters it starts, and so for their workers.
"""
