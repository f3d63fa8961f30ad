#!/bin/sh
# Certificates for examples/sidecar.toml and examples/aggregator.toml: a
# CA, the aggregator's server certificate (for localhost and 127.0.0.1)
# and the sidecar's client certificate, in ${SHIPPER_TLS:-./target/tls}.
# For trying the examples out; a real deployment uses its own CA.
#
#     sh examples/make-certs.sh
set -eu
dir="${SHIPPER_TLS:-./target/tls}"
mkdir -p "$dir"
cd "$dir"
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
  -subj "/CN=shipper example CA" -keyout ca.key -out ca.crt 2>/dev/null
issue() { # name, extensions
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=$1" -keyout "$1.key" -out "$1.csr" 2>/dev/null
  printf '%s\n' "$2" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
    -days 365 -extfile "$1.ext" -out "$1.crt" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
issue aggregator "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth"
issue sidecar "extendedKeyUsage=clientAuth"
echo "certificates in $dir: ca.crt, aggregator.crt/.key, sidecar.crt/.key"
