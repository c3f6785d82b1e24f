"""The core is pure: importing its modules loads no I/O library."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import app.core

ROOT = Path(__file__).resolve().parents[3]
IO_LIBRARIES = ("httpx", "redis", "githubkit", "arq", "subprocess", "asyncio", "uvicorn")
MODULES = sorted(f"app.core.{m.name}" for m in pkgutil.iter_modules(app.core.__path__))


def test_importing_the_core_loads_no_io_library() -> None:
    """All core modules in one fresh interpreter: what none of them loads together, none of
    them loads alone (this test process has loaded everything already)."""
    assert {"app.core.dag", "app.core.plan", "app.core.scheduler", "app.core.report"} <= set(
        MODULES
    )
    probe = (
        f"import sys; import {', '.join(MODULES)}; "
        f"print(','.join(n for n in {IO_LIBRARIES!r} if n in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "", f"the core loads {out.stdout.strip()}"
