#!/usr/bin/env bash
# Installs everything the tests need (idempotent; cached where possible) and runs the WHOLE suite:
# unit, AppTest, real ComfyUI 0.3.75 on CPU, and Chromium browser tests. A skipped test or a tier that
# ran no test fails the run (see tests/conftest.py). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
echo "== installing the panel and its test tools"
pip_log=$(mktemp)
if ! "$PY" -m pip install -q --disable-pip-version-check -e '.[test]' >"$pip_log" 2>&1; then
  grep -v "is ignored: it is neither a file nor a directory" "$pip_log" >&2; exit 1
fi
rm -f "$pip_log"

if ! command -v chromium >/dev/null 2>&1; then
  echo "== installing Chromium (Debian package) for the browser tests"
  if [ "$(id -u)" = "0" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
fi

echo "== installing (or reusing the cached) CPU ComfyUI 0.3.75 for the real-server tests"
"$PY" -m comfypanel.devserver install

echo "== running every test tier"
export COMFYPANEL_REQUIRE_ALL_TIERS=1
exec "$PY" -m pytest -p no:cacheprovider -rfEs "$@"
