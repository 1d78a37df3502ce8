#!/bin/sh
# Container entry: serve the app, but refuse to listen on the network without a password.
#
# Anyone who reaches the app can train, read the workspace and export models, so binding to a
# non-loopback address (the image's default, 0.0.0.0) or --share needs FINETUNE_AUTH=user:pass.
# FINETUNE_ALLOW_NO_AUTH=1 overrides that, for a host that is already protected (VPN, auth proxy).
#
# Host and port come from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (the image sets 0.0.0.0:7860);
# extra arguments are passed on to app.py (e.g. --share, --max-file-size 2gb, --host, --port).
set -eu

app_dir="${FINETUNE_APP_DIR:-$(cd "$(dirname "$0")/.." && pwd)}"
python="${PYTHON:-python}"
host="${GRADIO_SERVER_NAME:-0.0.0.0}"
port="${GRADIO_SERVER_PORT:-7860}"
share=0

# the same flags app.py takes win over the environment; look at them for the exposure check
previous=""
for arg in "$@"; do
    case "$previous" in
        --host) host="$arg" ;;
        --port) port="$arg" ;;
    esac
    case "$arg" in
        --host=*) host="${arg#--host=}" ;;
        --port=*) port="${arg#--port=}" ;;
        --share) share=1 ;;
    esac
    previous="$arg"
done

case "$host" in
    127.* | localhost | ::1 | "[::1]") exposed=$share ;;
    *) exposed=1 ;;
esac

if [ "$exposed" = 1 ] && [ -z "${FINETUNE_AUTH:-}" ] && [ "${FINETUNE_ALLOW_NO_AUTH:-0}" != 1 ]; then
    where="$host:$port"
    [ "$share" = 1 ] && where="a public gradio.live link"
    cat >&2 <<EOF
error: refusing to serve finetune studio on $where without a password.
Anyone who can reach it could train, read your data and export models.
Set FINETUNE_AUTH=user:password (e.g. docker run -e FINETUNE_AUTH=...), or bind to 127.0.0.1,
or set FINETUNE_ALLOW_NO_AUTH=1 if something in front of it already checks who comes in.
EOF
    exit 2
fi

# defaults first, so that flags given to the container (the same flags, later) win in app.py
if [ -n "${FINETUNE_WORKSPACE:-}" ]; then
    set -- --workspace "$FINETUNE_WORKSPACE" "$@"
fi
set -- --host "$host" --port "$port" "$@"

cd "$app_dir"
exec "$python" app.py "$@"
