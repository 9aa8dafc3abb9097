# Shared by scripts/demo and scripts/test: a project virtualenv with what it needs.
# Sourced, not run. Creates .venv on first use; reinstalls when pyproject.toml changes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "cancelkit needs Python >= 3.11 (found: $("$PYTHON" --version 2>&1)); set PYTHON=..." >&2
  exit 1
fi

# tied CMD...: run CMD so that it ends with this script, however the script ends: the
# kernel sends it SIGTERM when the script's shell exits (SIGTERM or SIGKILL of the
# script included), where util-linux's setpriv is there to ask for it (Linux).
tied() {
  if command -v setpriv >/dev/null && setpriv --pdeathsig TERM true 2>/dev/null; then
    setpriv --pdeathsig TERM -- "$@"
  else
    "$@"
  fi
}

ensure_venv() {  # ensure_venv EXTRAS
  local extras="$1"
  # A venv whose creation was cut short (no pip in it) is made again.
  if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import pip' 2>/dev/null; then
    tied "$PYTHON" -m venv --clear .venv
  fi
  local stamp=".venv/.cancelkit-installed-${extras//,/-}"
  local digest
  digest="$(cat pyproject.toml | sha256sum | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
    tied .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
    tied .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[${extras}]"
    echo "$digest" > "$stamp"
  fi
}
