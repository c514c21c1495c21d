"""`python -m brick` is the `brick` command."""

from brick.cli import main

raise SystemExit(main())
