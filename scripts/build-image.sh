#!/usr/bin/env bash
# Builds the controller's OCI image without pulling any base image: the release binary (without
# the emulator), the C runtime it links (libc6, libgcc-s1) and the CA bundle, from Debian's
# packages as apt fetches and verifies them against the signed archive index, /etc/passwd with
# the non-root user 65532, and nothing else (no shell, no package manager). Reproducible: one
# commit gives the same layer and image digests (file times are SOURCE_DATE_EPOCH, the commit's
# time unless set; tar and gzip carry nothing else that varies).
#
#   scripts/build-image.sh [OUT_DIR]      (default target/image)
#
# Writes OUT_DIR/iothub-dynreg.oci.tar (an OCI archive: `podman load -i`, or
# `skopeo copy oci-archive:OUT_DIR/iothub-dynreg.oci.tar docker://REGISTRY/iothub-dynreg:TAG`)
# and prints the layer and image digests.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/image}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
# Where the source is: IMAGE_SOURCE (the repository's URL) for a release. Not read from the
# checkout's remote, which differs between clones of one commit and would change the digest.
source="${IMAGE_SOURCE:-unknown}"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"

# The binary: the image's only program. Paths in panic messages name the crate, not this host.
# The revision is compiled in too, for iothub_dynreg_build_info.
IOTHUB_DYNREG_REVISION="$revision" \
RUSTFLAGS="${RUSTFLAGS:-} --remap-path-prefix=$PWD=/build --remap-path-prefix=$HOME/.cargo=/cargo" \
  cargo build --release --locked --no-default-features --bin iothub-dynreg

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/debs" "$work/extracted" "$work/root"
# apt checks every package against the signed index of the Debian archive it was given.
# A fresh machine has no package index yet: fetch it once (as root) when a download fails.
download() {
  (cd "$work/debs" && apt-get download -q "$@" >/dev/null 2>&1) && return 0
  [ "$(id -u)" = 0 ] && apt-get update -qq && (cd "$work/debs" && apt-get download -q "$@")
}
download libc6 libgcc-s1 ca-certificates
# libgcc-s1's copyright is its base package's (gcc-N-base).
gcc_base="$(dpkg-deb -f "$work"/debs/libgcc-s1_*.deb Depends | grep -o 'gcc-[0-9]*-base' | head -1)"
download "$gcc_base"
for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$work/extracted"; done
packages="$(for deb in "$work"/debs/*.deb; do dpkg-deb -f "$deb" Package Version | paste -sd= -; done | paste -sd, -)"

root="$work/root"
install -D -m 0755 target/release/iothub-dynreg "$root/usr/local/bin/iothub-dynreg"
strip --strip-all "$root/usr/local/bin/iothub-dynreg"
for library in ld-linux-x86-64.so.2 libc.so.6 libm.so.6 libgcc_s.so.1; do
  install -D -m 0755 "$work/extracted/lib/x86_64-linux-gnu/$library" \
    "$root/lib/x86_64-linux-gnu/$library"
done
mkdir -p "$root/lib64"
ln -s /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$root/lib64/ld-linux-x86-64.so.2"
# The bundle update-ca-certificates would make of the package's certificates.
mkdir -p "$root/etc/ssl/certs"
find "$work/extracted/usr/share/ca-certificates" -name '*.crt' -print0 | sort -z |
  xargs -0 cat > "$root/etc/ssl/certs/ca-certificates.crt"
for package in libc6 "$gcc_base" ca-certificates; do
  install -D -m 0644 "$work/extracted/usr/share/doc/$package/copyright" \
    "$root/usr/share/doc/$package/copyright"
done
printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$root/etc/group"
chmod 0644 "$root/etc/passwd" "$root/etc/group"

mkdir -p "$out"
python3 scripts/oci-image.py "$root" "$out/iothub-dynreg.oci.tar" \
  --tag "iothub-dynreg:$version" \
  --label "org.opencontainers.image.title=iothub-dynreg" \
  --label "org.opencontainers.image.description=Kubernetes controller for the dynamic-registration settings of Tencent Cloud IoT Hub products" \
  --label "org.opencontainers.image.source=$source" \
  --label "org.opencontainers.image.version=$version" \
  --label "org.opencontainers.image.revision=$revision" \
  --label "org.opencontainers.image.licenses=Apache-2.0" \
  --label "io.iothub-dynreg.debian-packages=$packages"
