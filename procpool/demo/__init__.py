"""``procpool-demo``: a pool of resource-owning workers under a simulated load.

One job per module: :mod:`~procpool.demo.patterns` (how many tasks per second
arrive over time), :mod:`~procpool.demo.workload` (the resource and the task,
run in the workers), :mod:`~procpool.demo.feeder` (submits tasks along a
pattern and counts outcomes), :mod:`~procpool.demo.record` (one tick per
refresh, burst workers coming and going, the summary), :mod:`~procpool.demo.view`
(live terminal view, plain lines or JSON lines) and :mod:`~procpool.demo.plot`
(the timeline PNG).
:mod:`procpool.cli` parses the arguments and runs them together.
"""
