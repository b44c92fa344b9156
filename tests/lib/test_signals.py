"""A child started by a process that inherited SIGINT as ignored gets the default back."""

from __future__ import annotations

import subprocess
import sys

import pytest

# The parent ignores SIGINT (as a shell's background job does), optionally calls the fix, and
# reports what its child sees.
_PARENT = """
import signal, subprocess, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
if sys.argv[1] == "fixed":
    from ledger_assets.lib.signals import handle_sigint_if_ignored
    handle_sigint_if_ignored()
child = "import signal; print(signal.getsignal(signal.SIGINT) == signal.SIG_IGN)"
print(subprocess.run([sys.executable, "-c", child], capture_output=True, text=True).stdout)
"""


@pytest.mark.parametrize(("mode", "child_ignores"), [("fixed", "False"), ("as-is", "True")])
def test_children_get_sigint_back(mode: str, child_ignores: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PARENT, mode], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == child_ignores
