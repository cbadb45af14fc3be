"""Where the test bed finds things in this checkout, so every module agrees without walking up the tree."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
CRD_DIR_ENV: Final = "RECONCILER_CRD_DIR"
# The upstream CRDs, unmodified; testbed/crds/README.md names each file's project, path and version.
BUNDLED_CRDS: Final = REPO_ROOT / "testbed" / "crds"
RESULTS_ENV: Final = "RECONCILER_TEST_RESULTS"
# The project's own CRDs (DomainClaim), installed from the manifests operators apply.
OWN_CRDS: Final = REPO_ROOT / "manifests" / "crds"


def crd_dir() -> Path:
    """The CRDs to install: ``$RECONCILER_CRD_DIR`` when set (other versions), else the bundled ones."""
    override = os.environ.get(CRD_DIR_ENV)
    return Path(override) if override else BUNDLED_CRDS


def results_dir() -> Path:
    """Where test runs write measurements: ``$RECONCILER_TEST_RESULTS``, else ``.test-results/`` in the checkout
    (ignored by git, so a test run never changes tracked files; ``bench/`` commands write ``bench/results/``)."""
    override = os.environ.get(RESULTS_ENV)
    return Path(override) if override else REPO_ROOT / ".test-results"
