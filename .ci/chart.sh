#!/usr/bin/env bash
# Chart checks, with the tools .ci/tools.sh installed into .tools/ and the binary built:
#   helm lint --strict and helm template with helm 3 and helm 4, default values and every
#   optional feature on; every rendered manifest, crds/, webhooks/ and examples/ validated offline
#   against the Kubernetes 1.32 schemas (kubernetes-validate --strict); every custom resource
#   rendered (the policy Job's ConfigMap included) and examples/ against our CRD schemas
#   (`mcp-hangar policy check` and `mcp-hangar validate`); then tests/chart.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
chart=charts/mcp-hangar
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cargo build --locked --quiet
bin=target/debug/mcp-hangar
kv=(.tools/venv/bin/kubernetes-validate --strict -k 1.32.0 --quiet)
python=.tools/venv/bin/python

values_sets=(default "$chart/ci/all-features-values.yaml" "$chart/ci/files-values.yaml")
for helm in helm3 helm4; do
  for values in "${values_sets[@]}"; do
    name="$helm-$(basename "$values" .yaml)"
    args=()
    [ "$values" = default ] || args=(-f "$values")
    echo "--- $name"
    ".tools/bin/$helm" lint --strict "$chart" "${args[@]}" --namespace mcp-system >"$out/$name.lint" \
      || { cat "$out/$name.lint"; exit 1; }
    ".tools/bin/$helm" template mcp-hangar "$chart" --namespace mcp-system --include-crds "${args[@]}" \
      >"$out/$name.yaml"
    "${kv[@]}" "$out/$name.yaml"
    # Our custom resources: top-level ones and those in the policy Job's ConfigMap.
    mkdir -p "$out/$name.cr"
    "$python" - "$out/$name.yaml" "$out/$name.cr" <<'PY'
import sys, yaml, os
rendered, target = sys.argv[1], sys.argv[2]
count = 0
def write(obj):
    global count
    count += 1
    with open(os.path.join(target, f"{count:02d}.yaml"), "w") as f:
        yaml.safe_dump(obj, f)
for doc in yaml.safe_load_all(open(rendered)):
    if not doc:
        continue
    if doc.get("apiVersion") == "mcp-hangar.io/v1alpha1":
        write(doc)
    if doc.get("kind") == "ConfigMap" and doc["metadata"]["name"].endswith("-policy"):
        for text in doc["data"].values():
            write(yaml.safe_load(text))
if count == 0:
    sys.exit(f"{rendered}: no custom resources rendered")
PY
    "$bin" policy check "$out/$name.cr"
    "$bin" validate --policy "$out/$name.cr" -f "$out/$name.cr" >/dev/null
  done
done

echo "--- crds/, webhooks/, the chart's crds/, examples/"
"${kv[@]}" crds/*.yaml "$chart"/crds/*.yaml webhooks/*.yaml
# Our kinds have no Kubernetes schema (kubernetes-validate only warns): `validate` checks them.
find examples -name '*.yaml' -not -path 'examples/invalid/*' -print0 | xargs -0 "${kv[@]}" --no-warn
"$bin" validate -f examples/ >/dev/null

echo "--- tests/chart.rs"
cargo test --locked --test chart -- --ignored
