#!/bin/sh
# Fetch init container of charts/ramalama-models: put MODEL_URL at MODEL_PATH (in the host
# model directory) when the file is missing. Values reach it as environment variables only,
# never pasted into the script, so a URL cannot inject shell.
#   MODEL_PATH, MODEL_URL        required
#   MODEL_SHA256                 optional: checked before the file goes in place
#   FETCH_TIMEOUT                seconds for the whole download
#   FETCH_TOKEN                  optional bearer token (from an existing Secret)
#   POD_NAME                     makes the partial file name unique per pod
set -eu

if [ -s "$MODEL_PATH" ]; then
  echo "fetch: $MODEL_PATH is present, nothing to do"
  exit 0
fi

mkdir -p "$(dirname "$MODEL_PATH")"
# Pods of several replicas may download at once: each writes its own partial file and the
# rename into place is atomic, so the server never sees a half-written model.
part="$MODEL_PATH.part-${POD_NAME:-$$}"
trap 'rm -f "$part"' EXIT

# Log the URL without its query and user:password@ (presigned URLs carry credentials there).
shown=${MODEL_URL%%\?*}
rest=${shown#*://}
host=${rest%%/*}
case $host in
  *@*) shown="${shown%%://*}://${host##*@}${rest#"$host"}" ;;
esac
echo "fetch: downloading $shown to $MODEL_PATH"
if command -v curl >/dev/null 2>&1; then
  set -- --fail --location --show-error --silent --retry 5 --retry-delay 10 \
    --connect-timeout 30 --max-time "${FETCH_TIMEOUT:-3600}" --output "$part"
  if [ -n "${FETCH_TOKEN:-}" ]; then
    set -- "$@" --header "Authorization: Bearer $FETCH_TOKEN"
  fi
  curl "$@" "$MODEL_URL"
else
  python3 - "$MODEL_URL" "$part" <<'EOF'
import os, shutil, sys, urllib.request
req = urllib.request.Request(sys.argv[1])
if os.environ.get("FETCH_TOKEN"):
    req.add_header("Authorization", "Bearer " + os.environ["FETCH_TOKEN"])
with urllib.request.urlopen(req, timeout=60) as resp, open(sys.argv[2], "wb") as out:
    shutil.copyfileobj(resp, out, 1 << 20)
EOF
fi

if [ -n "${MODEL_SHA256:-}" ]; then
  echo "fetch: checking sha256"
  echo "$MODEL_SHA256  $part" | sha256sum -c -
fi

mv -f "$part" "$MODEL_PATH"
trap - EXIT
echo "fetch: $MODEL_PATH is in place ($(wc -c <"$MODEL_PATH") bytes)"
