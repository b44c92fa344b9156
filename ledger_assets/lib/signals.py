"""Let child processes be interrupted even when this one was started with SIGINT ignored.

A shell without job control (a script's ``cmd &``, ``nohup``, many CI runners) starts a
background command with SIGINT ignored, and an ignored signal stays ignored across ``exec``.
``dagster dev`` then ignores SIGINT and also SIGTERM, which it maps onto SIGINT's handler, so
neither ``ledger demo``'s Ctrl-C path nor a test's ``terminate()`` stopped it (it had to be
killed, leaving its webserver, daemon and code server behind). A handled signal is reset to its
default on ``exec``, so handling SIGINT here gives every child the default back.
"""

from __future__ import annotations

import signal


def handle_sigint_if_ignored() -> None:
    """Raise KeyboardInterrupt on SIGINT (Python's default) if it was inherited as ignored."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
