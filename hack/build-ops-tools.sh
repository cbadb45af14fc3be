#!/usr/bin/env bash
# Builds the operator tools the monitoring kit and the Helm chart are tested with, from the Go module proxy,
# each cached in a directory keyed by its version, so only the first run on a machine pays for the build:
#
#   prometheus-$PROMETHEUS_VERSION/{prometheus,promtool}  github.com/prometheus/prometheus/cmd/{prometheus,promtool}
#   helm-$HELM_VERSION/helm                               helm.sh/helm/v3/cmd/helm
#   kustomize-$KUSTOMIZE_VERSION/kustomize                sigs.k8s.io/kustomize/kustomize/v5
#   prometheus-operator-crds-$PROMETHEUS_OPERATOR_VERSION/  the ServiceMonitor and PrometheusRule CRDs, copied
#                                                         from github.com/prometheus-operator/prometheus-operator
#                                                         (module source, example/prometheus-operator-crd/)
#
# Prometheus is built with `remove_all_sd` (no cloud service discovery: the tests use static targets and
# rule files only), which cuts its cold build by about half. Without `builtinassets` its web UI is absent;
# the HTTP API the tests use is not.
#
# Prints a directory of symlinks (prometheus, promtool, helm, kustomize, monitoring-crds) on stdout; progress
# goes to stderr.
set -euo pipefail

PROMETHEUS_VERSION="${PROMETHEUS_VERSION:-v0.316.0}"  # Prometheus 3.16.0
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
KUSTOMIZE_VERSION="${KUSTOMIZE_VERSION:-v5.8.2}"  # the newest that builds with Go 1.26
# The newest version of the root module on the proxy; the CRDs' monitoring.coreos.com/v1 kinds are stable.
PROMETHEUS_OPERATOR_VERSION="${PROMETHEUS_OPERATOR_VERSION:-v0.85.0}"
CACHE_ROOT="${RECONCILER_TESTBED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/acme-gateway-reconciler}"
KEY="prometheus$PROMETHEUS_VERSION-helm$HELM_VERSION-kustomize$KUSTOMIZE_VERSION-po$PROMETHEUS_OPERATOR_VERSION"
LINKS="$CACHE_ROOT/ops-tools-$KEY"
# The whole script under one lock too: two runs (hack/test's background build and its own call) must not
# copy the CRDs or set the links at the same time.
mkdir -p "$CACHE_ROOT"
exec 8>"$CACHE_ROOT/.build-ops-tools-$KEY.lock"
flock 8

# The binary `go install` makes of a package path: its last element, or the one before a /vN suffix.
bin_name() {
  local last="${1##*/}"
  if [[ "$last" =~ ^v[0-9]+$ ]]; then last="${1%/*}"; last="${last##*/}"; fi
  echo "$last"
}

# build NAME VERSION TAGS LDFLAGS PACKAGE...: go install the packages into $CACHE_ROOT/NAME-VERSION unless
# every one is there already; one build at a time per tool (parallel test runs share the cache).
build() {
  local name="$1" version="$2" tags="$3" ldflags="$4"; shift 4
  local out="$CACHE_ROOT/$name-$version" pkg missing=0 start
  for pkg in "$@"; do [[ -x "$out/$(bin_name "$pkg")" ]] || missing=1; done
  [[ $missing -eq 0 ]] && return 0
  command -v go >/dev/null || { echo "go is required to build $name" >&2; return 1; }
  mkdir -p "$CACHE_ROOT"
  exec 9>"$CACHE_ROOT/.build-$name-$version.lock"
  flock 9
  missing=0
  for pkg in "$@"; do [[ -x "$out/$(bin_name "$pkg")" ]] || missing=1; done
  if [[ $missing -eq 1 ]]; then
    start=$(date +%s)
    echo "go install $name $version (cold builds take minutes on 2 cores)" >&2
    rm -rf "$out.partial"
    mkdir -p "$out.partial"
    local args=()
    for pkg in "$@"; do args+=("$pkg@$version"); done
    GOBIN="$out.partial" go install -trimpath -tags "$tags" -ldflags "-s -w $ldflags" "${args[@]}" >&2
    rm -rf "$out"
    mv "$out.partial" "$out"
    echo "built $name $version in $(( $(date +%s) - start ))s" >&2
  fi
  exec 9>&-
}

# Module v0.MNN.P is Prometheus M.NN.P.
IFS=. read -r _ prom_minor prom_patch <<<"$PROMETHEUS_VERSION"
prom_release="${prom_minor:0:1}.$((10#${prom_minor:1})).$prom_patch"
prom_ldflags="-X github.com/prometheus/common/version.Version=$prom_release"
build prometheus "$PROMETHEUS_VERSION" remove_all_sd "$prom_ldflags" \
  github.com/prometheus/prometheus/cmd/prometheus github.com/prometheus/prometheus/cmd/promtool
# As Helm's Makefile: the default Kubernetes version (`helm template`, `helm lint`) follows its client-go
# v0.MINOR, else it is v1.20 and charts that state a kubeVersion do not render.
helm_gomod=$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
k8s_minor=$(awk '$1=="k8s.io/client-go"{split($2, v, "."); print v[2]; exit}' "$helm_gomod")
helm_ldflags="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
for pkg in chartutil lint/rules; do
  helm_ldflags+=" -X helm.sh/helm/v3/pkg/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/$pkg.k8sVersionMinor=$k8s_minor"
done
build helm "$HELM_VERSION" "" "$helm_ldflags" helm.sh/helm/v3/cmd/helm
build kustomize "$KUSTOMIZE_VERSION" "" "" sigs.k8s.io/kustomize/kustomize/v5

crds="$CACHE_ROOT/prometheus-operator-crds-$PROMETHEUS_OPERATOR_VERSION"
if [[ ! -f "$crds/monitoring.coreos.com_prometheusrules.yaml" ]]; then
  echo "go mod download prometheus-operator $PROMETHEUS_OPERATOR_VERSION (for its CRDs)" >&2
  src=$(go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  rm -rf "$crds.partial"
  mkdir -p "$crds.partial"
  cp "$src"/example/prometheus-operator-crd/monitoring.coreos.com_{servicemonitors,prometheusrules}.yaml "$crds.partial/"
  chmod 0644 "$crds.partial"/*  # module sources are read-only
  rm -rf "$crds"
  mv "$crds.partial" "$crds"
fi

mkdir -p "$LINKS"
ln -sfn "$CACHE_ROOT/prometheus-$PROMETHEUS_VERSION/prometheus" "$LINKS/prometheus"
ln -sfn "$CACHE_ROOT/prometheus-$PROMETHEUS_VERSION/promtool" "$LINKS/promtool"
ln -sfn "$CACHE_ROOT/helm-$HELM_VERSION/helm" "$LINKS/helm"
ln -sfn "$CACHE_ROOT/kustomize-$KUSTOMIZE_VERSION/kustomize" "$LINKS/kustomize"
ln -sfn "$crds" "$LINKS/monitoring-crds"
echo "$LINKS"
