#!/usr/bin/env bash
# Stages the root filesystem the Containerfile copies into an empty (`scratch`) image:
#   /usr/local/bin/mcp-hangar             the binary (symbols stripped)
#   the shared libraries `ldd` lists       glibc, libgcc_s and the loader, from this machine
#   /etc/passwd, /etc/group                the unprivileged user 65534 (nobody), as in the chart
#   /etc/nsswitch.conf                     users and hosts from files, then DNS
#   /etc/ssl/certs/ca-certificates.crt     roots for https health checks of remote MCP servers
# glibc 2.34 and later resolve names without loading NSS modules, so none are copied; the
# script refuses an older glibc. Kubernetes mounts /etc/hosts and /etc/resolv.conf.
#
# Usage: bash .ci/image-rootfs.sh [BINARY] [CONTEXT]
#   BINARY   default target/release/mcp-hangar (cargo build --release --locked)
#   CONTEXT  default target/image; the build context: CONTEXT/rootfs is (re)created
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-target/release/mcp-hangar}
context=${2:-target/image}
certificates=/etc/ssl/certs/ca-certificates.crt

if [ ! -x "$binary" ]; then
  echo "no binary at $binary: run 'cargo build --release --locked' first" >&2
  exit 1
fi
if [ ! -r "$certificates" ]; then
  echo "no $certificates: install the ca-certificates package" >&2
  exit 1
fi
glibc=$(getconf GNU_LIBC_VERSION | grep -oE '[0-9]+\.[0-9]+$')
if [ "$(printf '%s\n2.34\n' "$glibc" | sort -V | sed -n 1p)" != 2.34 ]; then
  echo "glibc $glibc is older than 2.34: name resolution would need NSS modules" >&2
  exit 1
fi

root="$context/rootfs"
rm -rf "$root"
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs"
strip --strip-all -o "$root/usr/local/bin/mcp-hangar" "$binary"

# Every absolute path ldd prints: "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" and
# the loader "/lib64/ld-linux-x86-64.so.2 (0x...)"; linux-vdso has none.
libraries=$(ldd "$binary" | grep -oE '/[^ ]+' | sort -u)
if [ -z "$libraries" ]; then
  echo "ldd lists no libraries for $binary" >&2
  exit 1
fi
for library in $libraries; do
  mkdir -p "$root$(dirname "$library")"
  cp -L "$library" "$root$library"
done

cat >"$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
PASSWD
cat >"$root/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
GROUP
cat >"$root/etc/nsswitch.conf" <<'NSS'
passwd: files
group: files
hosts: files dns
NSS
cp -L "$certificates" "$root/etc/ssl/certs/ca-certificates.crt"
chmod -R a+rX,go-w "$root"

echo "staged $root from $binary (glibc $glibc):"
(cd "$root" && find . -type f | sort | sed 's/^\./  /')
