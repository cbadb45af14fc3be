#!/usr/bin/env bash
# Builds Toxiproxy's server (github.com/Shopify/toxiproxy/v2/cmd/server) from the Go module proxy and caches
# it in a directory keyed by version, like hack/build-control-plane.sh: only the first run on a machine pays.
# The fault-injection tests (tests/e2e/test_faults.py, python -m bench.reliability) put it between the
# reconciler and the API server.
#
# Prints the directory holding `toxiproxy-server` on stdout; progress goes to stderr.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/build-lib.sh"
TOXIPROXY_VERSION="${TOXIPROXY_VERSION:-v2.12.0}"
OUT="$CACHE_ROOT/toxiproxy-$TOXIPROXY_VERSION"

reuse_or_lock "$OUT" toxiproxy-server "toxiproxy-$TOXIPROXY_VERSION"
start=$(date +%s)
echo "go install github.com/Shopify/toxiproxy/v2/cmd/server@$TOXIPROXY_VERSION" >&2
GOBIN="$OUT.partial" GOFLAGS=-mod=mod go install -trimpath -ldflags "-s -w" \
  "github.com/Shopify/toxiproxy/v2/cmd/server@$TOXIPROXY_VERSION" >&2
mv "$OUT.partial/server" "$OUT.partial/toxiproxy-server"
"$OUT.partial/toxiproxy-server" -version >&2 || true
publish "$OUT" "toxiproxy $TOXIPROXY_VERSION" "$start"
