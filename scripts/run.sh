#!/usr/bin/env bash
# Installs Comfy Panel and runs it (http://localhost:8501), talking to $COMFYUI_URL
# (default http://127.0.0.1:8188).
#   --with-local-comfyui  when no ComfyUI answers at that address, install (cached, ~2 min the first
#                         time) and start the CPU-only ComfyUI 0.3.75 the tests use, so the model-free
#                         example workflows run end to end without a GPU. It is stopped when the panel stops.
# Other arguments go to `streamlit run`.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
pip_log=$(mktemp)
if ! "$PY" -m pip install -q --disable-pip-version-check -e . >"$pip_log" 2>&1; then
  grep -v "is ignored: it is neither a file nor a directory" "$pip_log" >&2; exit 1
fi
rm -f "$pip_log"

URL=${COMFYUI_URL:-http://127.0.0.1:8188}
if [ "${1:-}" = "--with-local-comfyui" ]; then
  shift
  if ! "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/api/system_stats", timeout=3)' "$URL" 2>/dev/null; then
    "$PY" -m comfypanel.devserver ensure-running --url "$URL"
    PORT=$("$PY" -c 'import sys, urllib.parse; print(urllib.parse.urlsplit(sys.argv[1]).port or 80)' "$URL")
    trap '"$PY" -m comfypanel.devserver stop --port "$PORT" || true' EXIT
  fi
fi
export COMFYUI_URL="$URL"
"$PY" -m streamlit run streamlit_app.py "$@"
