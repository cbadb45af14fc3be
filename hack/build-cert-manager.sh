#!/usr/bin/env bash
# Builds the real cert-manager controllers (hack/cert-manager: a small main over the public
# github.com/cert-manager/cert-manager module, version pinned in its go.mod and go.sum) from the Go module
# proxy, and caches the binary in a directory keyed by that version and a hash of the module's files, so
# only the first run on a machine (or after an edit of hack/cert-manager) pays for the build:
#
#   $CACHE/cert-manager-<version>-<hash>/cert-manager-controller
#
# Prints the directory on stdout; progress goes to stderr.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/build-lib.sh"
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/cert-manager" && pwd)"
VERSION="$(awk '$1 == "github.com/cert-manager/cert-manager" { print $2 }' "$SRC/go.mod")"
[[ -n "$VERSION" ]] || { echo "$SRC/go.mod does not require github.com/cert-manager/cert-manager" >&2; exit 1; }
# The version is stamped into the binary: it names the default solver image and the User-Agent.
LDFLAGS="-s -w -X github.com/cert-manager/cert-manager/pkg/util.AppVersion=$VERSION"
HASH="$(cd "$SRC" && { printf '%s\n' "$LDFLAGS"; cat go.mod go.sum $(LC_ALL=C ls ./*.go); } | sha256sum | cut -c1-12)"
OUT="$CACHE_ROOT/cert-manager-$VERSION-$HASH"
BINARY=cert-manager-controller

reuse_or_lock "$OUT" "$BINARY" "cert-manager-$VERSION-$HASH"
start=$(date +%s)
echo "go build cert-manager $VERSION controllers ($SRC; cold builds take minutes on 2 cores)" >&2
# -mod=readonly: go.sum is the pin; a build never rewrites it.
(cd "$SRC" && go build -mod=readonly -trimpath -buildvcs=false -ldflags "$LDFLAGS" -o "$OUT.partial/$BINARY" .) >&2
"$OUT.partial/$BINARY" --version >&2
publish "$OUT" "cert-manager $VERSION" "$start"
