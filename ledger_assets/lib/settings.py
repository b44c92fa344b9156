"""Process settings, read from the environment by the command-line entry points only.

Every variable is listed in ``.env.example``. Dagster definitions never read this module: they
take the same variables through ``dagster.EnvVar`` so that values resolve at run time and are
not baked into the code location (see ARCHITECTURE.md "Configuration").
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PRIVATE_PG_PORT = 54329


@dataclass(frozen=True)
class Settings:
    #: A libpq DSN of an existing server; None means "use the private cluster".
    pg_dsn: str | None
    #: The project's state folder: private cluster, lake, Dagster home.
    state_dir: Path
    private_pg_port: int
    pg_bin: str | None
    pg_run_as: str

    @property
    def private_cluster_root(self) -> Path:
        return self.state_dir / "postgres"

    @property
    def dagster_home(self) -> Path:
        return self.state_dir / "dagster"

    @property
    def lake_root(self) -> Path:
        return self.state_dir / "lake"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        port_text = env.get("LEDGER_PG_PORT", str(DEFAULT_PRIVATE_PG_PORT))
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"LEDGER_PG_PORT={port_text!r} is not a TCP port number")
        return cls(
            pg_dsn=env.get("LEDGER_PG_DSN") or None,
            state_dir=Path(env.get("LEDGER_STATE_DIR") or ".state").resolve(),
            private_pg_port=int(port_text),
            pg_bin=env.get("LEDGER_PG_BIN") or None,
            pg_run_as=env.get("LEDGER_PG_RUN_AS") or "nobody",
        )
