"""Run the emulator with ``python -m emulator``."""

from emulator.cli import main

raise SystemExit(main())
