"""The package's import graph stays one way: no cycles (imports inside functions count), no import
from a lower layer up to a higher one, no module importing another module's ``_private`` name.
``lint-imports`` checks the layers between packages; this also checks the modules inside each."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = "cli,builtin,authoring,report,engine,track,train,plugins,arch,space,errors"


def test_no_cycles_no_upward_edges_no_private_imports() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "import_graph.py"), str(ROOT / "searchcore"), "--layers", LAYERS, "--edges"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cycles: 0" in done.stdout and "upward edges: 0" in done.stdout and "private imports: 0" in done.stdout
