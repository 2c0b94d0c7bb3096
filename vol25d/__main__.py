"""``python -m vol25d`` runs the command-line interface."""

from vol25d.cli import main

raise SystemExit(main())
