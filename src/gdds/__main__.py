"""``python -m gdds``: the same as the ``gdds`` command."""
from .cli import main

raise SystemExit(main())
