#!/usr/bin/env bash
# The container image: builds the release binary, stages the root filesystem
# (.ci/image-rootfs.sh), builds the Containerfile with podman (installed from Debian when missing)
# and checks the image: a numeric non-root user, the binary as entrypoint, no shell, and the
# binary running from the image's own filesystem (exported, then chroot as that user, so
# nothing in it is writable) for `--version`, `crds`, and a host name resolved through
# /etc/hosts by glibc without NSS modules (`policy apply` reaching a local HTTP listener).
# Needs root (apt-get, podman's storage, chroot); `podman run` is not used (no cgroup v2 here).
set -euo pipefail
cd "$(dirname "$0")/.."
image=localhost/mcp-hangar:ci
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | sed -n 1p)

if ! command -v podman >/dev/null; then
  echo "installing podman (Debian package)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq podman >/dev/null
fi
podman --version

started=$SECONDS
cargo build --locked --release
echo "release build: $((SECONDS - started)) s"
bash .ci/image-rootfs.sh target/release/mcp-hangar target/image
podman build --quiet -f Containerfile -t "$image" target/image

fail() {
  echo "image check failed: $*" >&2
  exit 1
}
user=$(podman image inspect --format '{{.Config.User}}' "$image")
entrypoint=$(podman image inspect --format '{{json .Config.Entrypoint}}' "$image")
[[ "$user" =~ ^[0-9]+(:[0-9]+)?$ ]] || fail "USER '$user' is not numeric"
[ "${user%%:*}" != 0 ] || fail "USER is root"
[ "$entrypoint" = '["/usr/local/bin/mcp-hangar"]' ] || fail "ENTRYPOINT is $entrypoint"
env=$(podman image inspect --format '{{json .Config.Env}}' "$image")
[[ "$env" == *'"MIMALLOC_ARENA_EAGER_COMMIT=0"'* ]] || fail "ENV lacks MIMALLOC_ARENA_EAGER_COMMIT=0: $env"

root=$(mktemp -d)
chmod 755 "$root"
container=$(podman create "$image")
trap 'podman rm -f "$container" >/dev/null 2>&1 || true; rm -rf "$root"' EXIT
podman export "$container" | tar -x -C "$root"
for shell in bin/sh bin/bash usr/bin/sh busybox; do
  [ ! -e "$root/$shell" ] || fail "the image contains /$shell"
done
writable=$(find "$root" -xdev -perm -o+w ! -type l | sed -n 1,5p)
[ -z "$writable" ] || fail "world-writable paths: $writable"
as_user() {
  chroot --userspec="$user" "$root" /usr/local/bin/mcp-hangar "$@"
}
printed=$(as_user --version)
[ "$printed" = "mcp-hangar $version" ] || fail "--version printed '$printed', expected 'mcp-hangar $version'"
crds=$(as_user crds)
grep -q '^kind: CustomResourceDefinition$' <<<"$crds" || fail "crds printed no CRD"
# Kubernetes mounts /etc/hosts; the kubeconfig names the API server by a host name only it knows.
port=$((20000 + RANDOM % 20000))
python3 -m http.server "$port" --bind 127.0.0.1 >"$root/http.log" 2>&1 &
listener=$!
trap 'kill "$listener" 2>/dev/null || true; podman rm -f "$container" >/dev/null 2>&1 || true; rm -rf "$root"' EXIT
echo "127.0.0.1 apiserver.image-check.test" >"$root/etc/hosts"
mkdir "$root/policy"
cp policy/profile-none.yaml "$root/policy/"
cat >"$root/kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "http://apiserver.image-check.test:$port"}}]
users: [{name: u, user: {token: image-check}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
KUBECONFIG
sleep 1
KUBECONFIG=/kubeconfig as_user policy apply -f /policy --timeout 2s >/dev/null 2>&1 || true
grep -q '"PATCH /apis/' "$root/http.log" || fail "the binary did not reach apiserver.image-check.test: $(cat "$root/http.log")"
size=$(podman image inspect --format '{{.Size}}' "$image")
echo "image $image: user $user, entrypoint $entrypoint, $((size / 1024 / 1024)) MiB, '$printed'"
