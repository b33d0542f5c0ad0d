"""How to install an optional extra, said the same way by every message that needs one."""

from __future__ import annotations


def install_hint(extra: str) -> str:
    """The pip commands that add ``extra``: from an index, and from a clone of the repository."""
    return (f'python -m pip install "procpool[{extra}]"'
            f' (from a clone of procpool: python -m pip install ".[{extra}]")')
