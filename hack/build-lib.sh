# Sourced by the hack/build-*.sh scripts that build one Go binary into a cache directory keyed by version.
CACHE_ROOT="${RECONCILER_TESTBED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/acme-gateway-reconciler}"

# reuse_or_lock OUT BINARY LOCK: if OUT/BINARY is built, print OUT and exit; otherwise take the build lock
# (held on fd 9 until the script exits) and look again, so concurrent runs on one machine build once.
reuse_or_lock() {
  local out="$1" binary="$2" lock="$3"
  if [[ -x "$out/$binary" ]]; then echo "$out"; exit 0; fi
  command -v go >/dev/null || { echo "go is required to build $binary" >&2; exit 1; }
  mkdir -p "$CACHE_ROOT"
  exec 9>"$CACHE_ROOT/.build-$lock.lock"
  flock 9
  if [[ -x "$out/$binary" ]]; then echo "$out"; exit 0; fi
  rm -rf "$out.partial"
  mkdir -p "$out.partial"
}

# publish OUT WHAT START: move the finished OUT.partial into place and print OUT.
publish() {
  rm -rf "$1"
  mv "$1.partial" "$1"
  echo "built $2 in $(( $(date +%s) - $3 ))s" >&2
  echo "$1"
}
