#!/bin/sh
# As the official image's start.sh: WEBUI_SECRET_KEY, else the key in WEBUI_SECRET_KEY_FILE,
# generated there once (so it survives restarts on the data volume).
set -eu
if [ -z "${WEBUI_SECRET_KEY:-}" ]; then
  key_file="${WEBUI_SECRET_KEY_FILE:-${DATA_DIR:-/app/backend/data}/.webui_secret_key}"
  if [ ! -s "$key_file" ]; then
    echo "generating a secret key in $key_file"
    (umask 077 && head -c 32 /dev/urandom | base64 | tr -d '\n' > "$key_file")
  fi
  WEBUI_SECRET_KEY="$(cat "$key_file")"
  export WEBUI_SECRET_KEY
fi
exec open-webui serve --host "${HOST:-0.0.0.0}" --port "${PORT:-8080}"
