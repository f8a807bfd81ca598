#!/usr/bin/env bash
# Install the built wheels of e5v-qdrant and llama-index-embeddings-e5v into a fresh virtualenv and run this package's
# tests against the installed copy (from a folder outside the source tree, so nothing is imported from the checkout).
#
#   bash integrations/llama-index-embeddings-e5v/check_fresh_install.sh            # full install (downloads torch CPU)
#   REUSE_SITE_PACKAGES=/path/to/venv/lib/python3.11/site-packages bash .../check_fresh_install.sh
#       # offline-friendly: the fresh venv sees an existing venv's third-party packages through a .pth file (whose own
#       # editable installs stay invisible), so only the two wheels are installed and pip still resolves their deps.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
if [[ -n "${REUSE_SITE_PACKAGES:-}" ]]; then
  echo "$REUSE_SITE_PACKAGES" > "$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/zz_reuse.pth"
else
  "$work/venv/bin/pip" install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
fi
"$work/venv/bin/pip" wheel -q --no-deps -w "$work/wheels" "$repo" "$here"
"$work/venv/bin/pip" install -q "$work/wheels"/*.whl pytest pytest-asyncio
mkdir "$work/tests" && cp "$here"/tests/test_*.py "$work/tests/"
cd "$work/tests"
"$work/venv/bin/python" -m pytest -q -p no:cacheprovider -o asyncio_mode=auto -o asyncio_default_fixture_loop_scope=function .
