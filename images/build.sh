#!/bin/sh
# Builds the two images the Kubernetes examples name, offline, into OCI layout directories
# (`make images`): no registry, no daemon (buildah, vfs storage, chroot isolation).
#
#   target/images/quotad         quotad, FROM scratch: the binary, the glibc libraries it links
#                                and the system's CA bundle (for rediss://); runs as 65532.
#   target/images/tollgate-wasm  the filter as the Wasm OCI image Istio's WasmPlugin and Envoy
#                                Gateway pull: one layer holding /plugin.wasm.
#
# Push with e.g. `buildah push oci:target/images/quotad:0.1.0 docker://registry.example.com/...`.
# Checked by tests/images.rs.
set -eu
out=${1:-target/images}
version=${VERSION:-0.1.0}
wasm=target/wasm32-wasip1/release/tollgate.wasm
quotad=target/quotad/quotad
b() { buildah --storage-driver vfs "$@"; }
export BUILDAH_ISOLATION=chroot
mkdir -p "$out"
rm -rf "$out/quotad" "$out/tollgate-wasm"

# The filter: one layer, /plugin.wasm (Istio's "compat" variant, which Envoy Gateway reads too).
c=$(b from --quiet scratch)
b copy --quiet "$c" "$wasm" /plugin.wasm
b config --annotation module.wasm.image/variant=compat-smart \
    --label org.opencontainers.image.title=tollgate \
    --label org.opencontainers.image.version="$version" "$c"
b commit --quiet --format oci --rm "$c" "oci:$out/tollgate-wasm:$version" >/dev/null

# quotad: a root filesystem of the binary and exactly the libraries `ldd` names.
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
cp "$quotad" "$root/quotad"
for lib in $(ldd "$quotad" | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
mkdir -p "$root/etc/ssl/certs" "$root/tmp"
chmod 1777 "$root/tmp"
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$root/etc/group"
c=$(b from --quiet scratch)
b copy --quiet "$c" "$root" /
b config --user 65532:65532 --entrypoint '["/quotad"]' --cmd '' \
    --port 8081 --port 8080 --env RUST_LOG=info \
    --label org.opencontainers.image.title=quotad \
    --label org.opencontainers.image.version="$version" "$c"
b commit --quiet --format oci --rm "$c" "oci:$out/quotad:$version" >/dev/null
echo "images written to $out/: quotad, tollgate-wasm ($version)"
