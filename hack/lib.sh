# Shared by hack/test, hack/run and hack/lock: a Python environment with the project's locked dependencies,
# kept in a stable cache directory keyed by the lock file, so repeated runs skip the install.
# shellcheck shell=bash

CACHE_ROOT="${RECONCILER_TESTBED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/acme-gateway-reconciler}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

find_python() {
  local candidate
  for candidate in "${PYTHON:-}" python3.11 python3.12 python3.13 python3; do
    [[ -n "$candidate" ]] || continue
    if command -v "$candidate" >/dev/null 2>&1 \
      && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  echo "Python >= 3.11 is required" >&2
  return 1
}

# The locked dependencies of the test environment (runtime + test + lint), refreshed by hack/lock.
DEV_LOCK="$REPO_ROOT/requirements/dev.lock"

# Prints the venv's python. Installs the locked dependencies (not the project: tests and `python -m reconciler`
# import it from this checkout) the first time a given lock file is seen, verifying every file's hash.
ensure_venv() {
  local python key venv
  python="$(find_python)"
  key="$("$python" - "$DEV_LOCK" <<'PY'
import hashlib, sys
print(hashlib.sha256(open(sys.argv[1], "rb").read() + sys.version.encode()).hexdigest()[:16])
PY
)"
  venv="$CACHE_ROOT/venv-$key"
  if [[ ! -x "$venv/bin/python" || ! -f "$venv/.complete" ]]; then
    echo "creating Python environment $venv from ${DEV_LOCK#"$REPO_ROOT"/}" >&2
    mkdir -p "$CACHE_ROOT"
    rm -rf "$venv"
    "$python" -m venv "$venv" >&2
    "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
    "$venv/bin/python" -m pip install --quiet --require-hashes -r "$DEV_LOCK" >&2
    touch "$venv/.complete"
  fi
  echo "$venv/bin/python"
}
