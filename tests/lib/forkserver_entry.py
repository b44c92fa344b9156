"""A program for the fork server tests: ``main(args)`` does what args[0] says."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence


def main(arguments: Sequence[str]) -> int:
    command, *args = arguments
    if command == "echo":
        # What the child got: its arguments, directory, one variable, stdin, and whether it
        # came from a server that had imported this module ("warm").
        print(
            f"args={args} cwd={os.getcwd()} X={os.environ.get('X')} stdin={sys.stdin.read()!r}"
            f" warm={os.environ.get('FORKSERVER_TEST_COLD') is None}"
        )
        return 0
    if command == "exit":
        return int(args[0])
    if command == "sleep":
        print("sleeping", flush=True)
        time.sleep(float(args[0]))
        return 0
    if command == "touch":
        with open(args[0], "w") as out:
            out.write(str(os.getpid()))
        return 0
    raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    # Run cold (``python -m``): mark it, so a test can tell a fallback from a fork.
    os.environ["FORKSERVER_TEST_COLD"] = "1"
    raise SystemExit(main(sys.argv[1:]))
