#!/usr/bin/env bash
# Self-signed CA and a server certificate for ops/nats/tls.conf (development and tests only).
#   ops/scripts/make-dev-certs.sh [OUT_DIR] [HOSTNAME...]
# Writes ca.pem, ca-key.pem, server.pem, server-key.pem. Clients verify with --tls-ca OUT_DIR/ca.pem.
set -euo pipefail
out="${1:-$(cd "$(dirname "$0")/.." && pwd)/nats/certs}"
shift || true
hosts=("localhost" "$@")
mkdir -p "$out"
cd "$out"
san="IP:127.0.0.1"
for h in "${hosts[@]}"; do san="$san,DNS:$h"; done
openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=soar-dev-ca" \
  -keyout ca-key.pem -out ca.pem >/dev/null 2>&1
openssl req -newkey rsa:2048 -nodes -subj "/CN=${hosts[0]}" -keyout server-key.pem -out server.csr >/dev/null 2>&1
printf "subjectAltName=%s\nextendedKeyUsage=serverAuth\n" "$san" > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 365 \
  -extfile server.ext -out server.pem >/dev/null 2>&1
rm -f server.csr server.ext ca.srl
chmod 600 ca-key.pem server-key.pem
echo "wrote $out/{ca.pem,server.pem,server-key.pem} for: ${hosts[*]} 127.0.0.1"
