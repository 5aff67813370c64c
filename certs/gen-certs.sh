#!/usr/bin/env bash
# Makes a CA and a serving certificate for the webhook Service with openssl, and prints the
# caBundle (base64 of the CA certificate) for the ValidatingWebhookConfiguration.
#
#   certs/gen-certs.sh [--out DIR] [--service NAME] [--namespace NS] [--san DNS:x|IP:y]... [--days N]
#
# Files written to DIR: ca.crt, ca.key, tls.crt, tls.key (keys are mode 0600). An existing CA in
# DIR is reused, so a renewed serving certificate keeps the same caBundle.
set -euo pipefail

out=certs/dev
service=stateguard-webhook
namespace=stateguard-system
days=365
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --service) service=$2; shift 2 ;;
    --namespace) namespace=$2; shift 2 ;;
    --san) extra+=("$2"); shift 2 ;;
    --days) days=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "gen-certs.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
command -v openssl >/dev/null || { echo "gen-certs.sh: openssl is not installed (apt-get install openssl)" >&2; exit 1; }

mkdir -p "$out"
umask 077
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ ! -s "$out/ca.crt" ] || [ ! -s "$out/ca.key" ]; then
  openssl ecparam -name prime256v1 -genkey -noout -out "$out/ca.key"
  openssl req -x509 -new -key "$out/ca.key" -sha256 -days $((days * 10)) \
    -subj "/CN=stateguard-ca" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$out/ca.crt" 2>/dev/null
fi

sans="DNS:${service},DNS:${service}.${namespace},DNS:${service}.${namespace}.svc,DNS:${service}.${namespace}.svc.cluster.local,DNS:localhost,IP:127.0.0.1"
for s in "${extra[@]}"; do sans="$sans,$s"; done

openssl ecparam -name prime256v1 -genkey -noout -out "$out/tls.key"
openssl req -new -key "$out/tls.key" -subj "/CN=${service}.${namespace}.svc" -out "$tmp/tls.csr"
cat > "$tmp/ext.cnf" <<EXT
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=${sans}
EXT
openssl x509 -req -in "$tmp/tls.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
  -CAserial "$tmp/ca.srl" -days "$days" -sha256 -extfile "$tmp/ext.cnf" -out "$out/tls.crt" 2>/dev/null
chmod 0644 "$out/ca.crt" "$out/tls.crt"

echo "# certificates in $out for ${service}.${namespace}.svc (SANs: $sans)" >&2
echo "# caBundle:" >&2
base64 -w0 "$out/ca.crt"
echo
