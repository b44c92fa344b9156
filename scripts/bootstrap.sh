# Sourced by scripts/demo and scripts/test: make a fresh machine with only Python ready.
#  1. uv (the locked installer) — from PATH, or installed once into .state/bootstrap;
#  2. the locked environment (.venv) from uv.lock;
#  3. PostgreSQL server binaries for the private cluster, unless LEDGER_PG_DSN names a server.
set -euo pipefail

UV_VERSION="0.13.8"
PROJECT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$PROJECT_ROOT"

say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 2; }

PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' 2>/dev/null \
    || die "Python 3.11 is required (found: $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11"

if command -v uv >/dev/null 2>&1 && [[ "$(uv --version | awk '{print $2}')" == "$UV_VERSION" ]]; then
    UV="$(command -v uv)"
else
    UV="$PROJECT_ROOT/.state/bootstrap/bin/uv"
    if [[ ! -x "$UV" ]]; then
        say "installing uv $UV_VERSION into .state/bootstrap"
        "$PYTHON" -m venv .state/bootstrap
        .state/bootstrap/bin/python -m pip install --quiet "uv==$UV_VERSION"
    fi
fi
export UV

say "syncing the locked environment (.venv)"
# Bytecode is compiled at install: every Dagster run, dbt invocation and test process imports
# dagster + dbt, which costs about 3.5 s with .pyc files and 6.5-7 s without them (compiled on
# every import when PYTHONDONTWRITEBYTECODE is set, as on our CI machines). ~15 s once.
"$UV" sync --locked --python "$PYTHON" --quiet --compile-bytecode

have_postgres_binaries() {
    [[ -n "${LEDGER_PG_BIN:-}" && -x "${LEDGER_PG_BIN}/initdb" ]] && return 0
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && return 0
    command -v initdb >/dev/null 2>&1
}

if [[ -z "${LEDGER_PG_DSN:-}" ]] && ! have_postgres_binaries; then
    if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null 2>&1; then
        say "installing the PostgreSQL server (Debian package) for the private cluster"
        # Don't let the package create and start a system cluster of its own.
        mkdir -p /etc/postgresql-common
        echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    else
        die "no PostgreSQL server binaries: install them (e.g. apt-get install postgresql), set LEDGER_PG_BIN to their folder, or set LEDGER_PG_DSN to an existing server"
    fi
fi

# The dashboard's browser test drives Debian's headless Chromium (no browser download at run time).
if ! command -v chromium >/dev/null 2>&1 && [[ -z "${LEDGER_CHROMIUM:-}" ]]; then
    if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null 2>&1; then
        say "installing Chromium (Debian package) for the dashboard's browser test"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
    else
        say "no chromium on PATH: the dashboard's browser test will fail (apt-get install chromium, or set LEDGER_CHROMIUM)"
    fi
fi
