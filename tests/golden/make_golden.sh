#!/usr/bin/env bash
# Regenerate tests/golden/tf441 (the golden vectors of tests/test_image_layout.py) in the authors' environment.
#
# Creates a separate venv with transformers 4.41.2 (the version the E5-V authors pinned), torch 2.13.0 (CPU build)
# and numpy<2, then runs make_golden.py there: 4.41.2 builds and saves a tiny replica and embeds texts, images and
# composed queries with the E5-V README recipe. Takes a few minutes on 2 cores; nothing here is needed at run time.
#
# Usage: tests/golden/make_golden.sh [--composed-only] [VENV_DIR]   (default VENV_DIR: ${TMPDIR:-/tmp}/e5v-golden-tf441)
#   --composed-only: recompute only the composed vectors of the existing fixture (after a composed-prompt change); the
#   replica, images, text and image vectors stay byte for byte (a full run on another CPU moves them by ~1e-7).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
composed_only=""
if [ "${1:-}" = "--composed-only" ]; then
  composed_only=1
  shift
fi
venv="${1:-${TMPDIR:-/tmp}/e5v-golden-tf441}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/pip" install -q "torch==2.13.0" "transformers==4.41.2" pillow "numpy<2"
out="$here/tf441"
if [ -n "$composed_only" ]; then
  "$venv/bin/python" "$here/make_golden.py" --composed-only "$out"
  exit 0
fi
rm -rf "$out.new"
"$venv/bin/python" "$here/make_golden.py" "$out.new"
rm -rf "$out"
mv "$out.new" "$out"
echo "golden fixture written to $out"
