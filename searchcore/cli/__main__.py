"""``python -m searchcore.cli``: how a search spawns its local workers."""

from searchcore.cli.main import main

raise SystemExit(main())
