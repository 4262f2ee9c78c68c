"""``python -m spinach``: the ``spinach`` command."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
