#!/usr/bin/env bash
# Makes (or renews) the webhook's serving certificate for the self-signed overlay with
# certs/gen-certs.sh: a CA (kept if present, so the caBundle stays the same across renewals) and a
# certificate for stateguard-webhook.stateguard-system.svc, written to ./certs/ next to this
# script. That directory is git-ignored: it holds private keys.
#
#   manifests/overlays/self-signed/setup.sh [--days N]
#   kubectl apply -k manifests/overlays/self-signed
#
# Needs openssl. Prints the caBundle on stdout, like gen-certs.sh.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
gen="$here/../../../certs/gen-certs.sh"
if [ ! -f "$gen" ]; then
  echo "setup.sh: $gen not found (run this script from a stateguard checkout)" >&2
  exit 1
fi
bash "$gen" --out "$here/certs" --service stateguard-webhook --namespace stateguard-system "$@"
# ca.key stays in ./certs/ so a renewal keeps the CA; the overlay never reads it.
echo "# next: kubectl apply -k $here" >&2
