"""``python -m procpool``: the same as the ``procpool-demo`` command."""

from procpool.cli import main

raise SystemExit(main())
