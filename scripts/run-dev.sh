#!/usr/bin/env bash
# `make run`: starts stateguard-webhook with development certificates, the built-in policy and
# the example cluster state, after printing a curl command that gets a denial.
set -euo pipefail
build=${1:-build}
listen=${2:-127.0.0.1:8443}
cd "$(dirname "$0")/.."
cat <<MSG

stateguard-webhook is starting on https://${listen} (Ctrl-C stops it).
Audit log lines appear below. In another terminal, ask it to judge deleting a Bound PV:

  curl -sS --cacert certs/dev/ca.crt -H 'Content-Type: application/json' \\
    --data @examples/reviews/delete-bound-pv.json https://${listen}/validate

Also: curl --cacert certs/dev/ca.crt https://${listen}/metrics

MSG
exec "$build/bin/stateguard-webhook" --listen "$listen" \
  --tls-cert certs/dev/tls.crt --tls-key certs/dev/tls.key \
  --cluster-state examples/cluster-state.yaml --audit-log -
