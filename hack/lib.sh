# Shared by hack/test and hack/run: a Python environment with the project's dependencies, kept in a
# stable cache directory keyed by the dependency list, so repeated runs skip the install.
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

# Prints the venv's python. Installs the dependencies (not the project: tests and `python -m reconciler`
# import it from this checkout) the first time a given dependency list is seen.
ensure_venv() {
  local python key venv
  python="$(find_python)"
  key="$("$python" - "$REPO_ROOT/pyproject.toml" <<'PY'
import hashlib, sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
deps = project["dependencies"] + sum(project["optional-dependencies"].values(), [])
print(hashlib.sha256("\n".join(sorted(deps)).encode() + sys.version.encode()).hexdigest()[:16])
PY
)"
  venv="$CACHE_ROOT/venv-$key"
  if [[ ! -x "$venv/bin/python" || ! -f "$venv/.complete" ]]; then
    echo "creating Python environment $venv" >&2
    mkdir -p "$CACHE_ROOT"
    rm -rf "$venv"
    "$python" -m venv "$venv" >&2
    "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
    "$venv/bin/python" - "$REPO_ROOT/pyproject.toml" > "$venv/requirements.txt" <<'PY'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
print("\n".join(project["dependencies"] + sum(project["optional-dependencies"].values(), [])))
PY
    "$venv/bin/python" -m pip install --quiet -r "$venv/requirements.txt" >&2
    touch "$venv/.complete"
  fi
  echo "$venv/bin/python"
}
