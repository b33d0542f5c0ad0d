"""Pure policy: no processes, no threads, no I/O."""
