"""Rules about the code base itself, checked on every run."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ledger_assets"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_lib_never_imports_dagster() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in (PACKAGE / "lib").rglob("*.py")
        if {"dagster", "dagster_dbt", "dagster_duckdb", "dagster_aws"} & _imports(path)
    ]
    assert offenders == []


def test_env_example_lists_every_setting_the_code_reads() -> None:
    read: set[str] = set()
    pattern = re.compile(
        r"""(?:EnvVar|environ\.get|env\.get|getenv)\(\s*["']((?:LEDGER|STRIPE|PLAID)_[A-Z0-9_]+)"""
    )
    for path in PACKAGE.rglob("*.py"):
        read.update(pattern.findall(path.read_text()))
    listed = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert read, "the pattern found no settings at all: it is broken"
    assert read - listed == set(), "settings read by the code but missing from .env.example"
