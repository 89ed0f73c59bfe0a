# Sourced by bin/run, bin/test, bin/bench: make .venv current with the project installed.
# Reinstalls only when pyproject.toml changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SYNAPSE_VENV:-$ROOT/.venv}"
EXTRAS="${1:-}"

find_python() {
  for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [[ -n "$candidate" ]] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  echo "synapse: Python 3.11 or newer is needed (set PYTHON=...)" >&2
  return 1
}

stamp="$VENV/.synapse-install"
want="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)${EXTRAS:+-$EXTRAS}"
if [[ ! -x "$VENV/bin/python" ]]; then
  py="$(find_python)"
  echo "synapse: creating $VENV with $py" >&2
  "$py" -m venv "$VENV"
fi
# An install with extras also serves a caller that needs none (bin/run after bin/test).
if [[ ! -f "$stamp" ]] || ! { grep -qx -- "$want" "$stamp" ||
                              { [[ -z "$EXTRAS" ]] && grep -q -- "^$want-" "$stamp"; }; }; then
  echo "synapse: installing the project into $VENV" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
  spec="$ROOT"
  [[ -n "$EXTRAS" ]] && spec="$ROOT[$EXTRAS]"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$spec" >&2
  echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
