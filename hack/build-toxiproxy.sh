#!/usr/bin/env bash
# Builds Toxiproxy's server (github.com/Shopify/toxiproxy/v2/cmd/server) from the Go module proxy and caches
# it in a directory keyed by version, like hack/build-control-plane.sh: only the first run on a machine pays.
# The fault-injection tests (tests/e2e/test_faults.py, python -m bench.reliability) put it between the
# reconciler and the API server.
#
# Prints the directory holding `toxiproxy-server` on stdout; progress goes to stderr.
set -euo pipefail

TOXIPROXY_VERSION="${TOXIPROXY_VERSION:-v2.12.0}"
CACHE_ROOT="${RECONCILER_TESTBED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/acme-gateway-reconciler}"
OUT="$CACHE_ROOT/toxiproxy-$TOXIPROXY_VERSION"

if [[ -x "$OUT/toxiproxy-server" ]]; then
  echo "$OUT"
  exit 0
fi
command -v go >/dev/null || { echo "go is required to build toxiproxy" >&2; exit 1; }
mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.build-toxiproxy-$TOXIPROXY_VERSION.lock"
flock 9
if [[ -x "$OUT/toxiproxy-server" ]]; then echo "$OUT"; exit 0; fi

start=$(date +%s)
rm -rf "$OUT.partial"
mkdir -p "$OUT.partial"
echo "go install github.com/Shopify/toxiproxy/v2/cmd/server@$TOXIPROXY_VERSION" >&2
GOBIN="$OUT.partial" GOFLAGS=-mod=mod go install -trimpath -ldflags "-s -w" \
  "github.com/Shopify/toxiproxy/v2/cmd/server@$TOXIPROXY_VERSION" >&2
mv "$OUT.partial/server" "$OUT.partial/toxiproxy-server"
"$OUT.partial/toxiproxy-server" -version >&2 || true
rm -rf "$OUT"
mv "$OUT.partial" "$OUT"
echo "built toxiproxy $TOXIPROXY_VERSION in $(( $(date +%s) - start ))s" >&2
echo "$OUT"
