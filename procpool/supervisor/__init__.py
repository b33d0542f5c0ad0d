"""The supervisor: all policy of one TaskManager, on one thread, in rooms.

=============  ==============================================================
module         owns
=============  ==============================================================
``loop``       the thread, the lifecycle, the public face the manager uses
``state``      what the rooms share: queues, worker table, lock, records
``dispatch``   queues → workers: strict priority, batches by kind of task
``recovery``   outcomes → futures; crashes → blame, retries, re-queues
``fleet``      the worker table's life: starts, backoff, hooks, leaving
``bursting``   burst ticks: the controller's decisions, applied
=============  ==============================================================

The data-flow diagram is in :mod:`procpool.supervisor.loop`.
"""

from procpool.supervisor.bursting import cooldown_ticks
from procpool.supervisor.loop import Supervisor, _live_supervisors
from procpool.supervisor.state import Stats

__all__ = ["Stats", "Supervisor", "_live_supervisors", "cooldown_ticks"]
