#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager and etcd from the Go module proxy and caches them
# in a directory keyed by version, so only the first run on a machine pays for the build.
#
# k8s.io/kubernetes cannot be `go install`ed (its go.mod replaces the staging modules with ./staging),
# so we build from a throw-away module that requires it and pins each staging module to its published
# v0.<minor>.<patch> release.
#
# Prints the directory holding the binaries on stdout; progress goes to stderr.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.36.3}"
CACHE_ROOT="${RECONCILER_TESTBED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/acme-gateway-reconciler}"
OUT="$CACHE_ROOT/control-plane-$K8S_VERSION"
BINARIES=(kube-apiserver kube-controller-manager etcd)

have_all() {
  local b
  for b in "${BINARIES[@]}"; do [[ -x "$1/$b" ]] || return 1; done
}

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]] && have_all "$KUBEBUILDER_ASSETS"; then
  echo "using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS" >&2
  echo "$KUBEBUILDER_ASSETS"
  exit 0
fi
if have_all "$OUT"; then
  echo "$OUT"
  exit 0
fi

command -v go >/dev/null || { echo "go is required to build the control plane" >&2; exit 1; }
mkdir -p "$CACHE_ROOT"
# One build at a time per cache (parallel test runs share it).
exec 9>"$CACHE_ROOT/.build-$K8S_VERSION.lock"
flock 9
if have_all "$OUT"; then echo "$OUT"; exit 0; fi

start=$(date +%s)
work="$CACHE_ROOT/build-$K8S_VERSION"
rm -rf "$work" "$OUT.partial"
mkdir -p "$work/cmd/kube-apiserver" "$work/cmd/kube-controller-manager" "$work/cmd/etcd" "$OUT.partial"
cd "$work"

echo "resolving k8s.io/kubernetes@$K8S_VERSION" >&2
upstream_gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
staging_version="v0.${K8S_VERSION#v1.}"
go_directive=$(awk '$1=="go"{print $2; exit}' "$upstream_gomod")

{
  echo "module acme-reconciler.local/control-plane"
  echo
  echo "go $go_directive"
  echo
  echo "require k8s.io/kubernetes $K8S_VERSION"
  echo
  echo "replace ("
  grep -oE '^\s*k8s\.io/[A-Za-z0-9._-]+ => \./staging/' "$upstream_gomod" \
    | awk -v v="$staging_version" '{print "\t" $1 " => " $1 " " v}'
  echo ")"
} > go.mod

cat > cmd/kube-apiserver/main.go <<'GO'
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() { os.Exit(cli.Run(app.NewAPIServerCommand())) }
GO
cat > cmd/kube-controller-manager/main.go <<'GO'
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() { os.Exit(cli.Run(app.NewControllerManagerCommand())) }
GO
cat > cmd/etcd/main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO

echo "go mod tidy (downloads modules)" >&2
GOFLAGS=-mod=mod go mod tidy >&2
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2)"
echo "go build (cold builds take a while on 2 cores)" >&2
go build -trimpath -ldflags "$ldflags" -o "$OUT.partial/" ./cmd/... >&2
"$OUT.partial/kube-apiserver" --version >&2
rm -rf "$OUT"
mv "$OUT.partial" "$OUT"
rm -rf "$work"
echo "built control plane $K8S_VERSION in $(( $(date +%s) - start ))s" >&2
echo "$OUT"
