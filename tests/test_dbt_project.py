"""The dbt project parses with the locked dbt-core/dbt-duckdb, offline."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_dbt_parse(tmp_path: Path) -> None:
    project = tmp_path / "dbt_project"
    shutil.copytree(ROOT / "dbt_project", project)
    dbt = Path(sys.executable).with_name("dbt")
    result = subprocess.run(
        [str(dbt), "parse", "--project-dir", str(project), "--profiles-dir", str(project)],
        env={
            **os.environ,
            "LEDGER_STATE_DIR": str(tmp_path),
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (project / "target" / "manifest.json").exists()
