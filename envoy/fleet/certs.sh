#!/bin/sh
# Development certificates for the fleet examples' mutual TLS between Envoy and quotad: a CA,
# quotad's certificate (quotad.tollgate, 127.0.0.1) and the gateways' client certificate
# (gateway.tollgate), written to envoy/fleet/certs/ unless they are there already. Never use
# them beyond a laptop: in production the certificates come from your PKI (cert-manager,
# Istio, SPIRE) as Secrets (envoy/fleet/quotad-k8s.yaml).
set -eu
dir=${1:-envoy/fleet/certs}
[ -s "$dir/gateway.key" ] && exit 0
mkdir -p "$dir"
umask 077
ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
openssl req -x509 $ec -keyout "$dir/ca.key" -out "$dir/ca.crt" -days 365 \
    -subj "/CN=tollgate fleet development CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
issue() { # name, subjectAltName
    openssl req $ec -keyout "$dir/$1.key" -out "$dir/$1.csr" -subj "/CN=$1" 2>/dev/null
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$2" > "$dir/$1.ext"
    openssl x509 -req -in "$dir/$1.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
        -days 365 -extfile "$dir/$1.ext" -out "$dir/$1.crt" 2>/dev/null
    rm -f "$dir/$1.csr" "$dir/$1.ext"
}
issue quotad "DNS:quotad.tollgate,IP:127.0.0.1"
issue gateway "DNS:gateway.tollgate"
rm -f "$dir/ca.srl"
echo "fleet certificates written to $dir/"
