"""Backends: where worker processes run (local processes, or a Dask cluster)."""
