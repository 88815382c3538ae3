#!/usr/bin/env bash
# Prepare, on a CPU machine with PyPI, what the GPU benchmarks need on a machine with no network.
#
#   bash benchmarks/gpu/pack.sh [--data PREPARED_ML1M_DIR] [--part-mib 40]
#
# Run it from the checkout the device calls are made from. Everything goes under the git-ignored
# .gpu/ of the repository root; each device call carries some of it (README.md):
#   .gpu/base   wheels missing on the GPU machine (but faiss), the prepared ml-1m with its minilm
#               features, SmolLM2-135M's config + tokenizer, COMMIT, the GGUF's sha256 and part list
#   .gpu/w1     the SmolLM2 GGUF's first --part-mib MiB       (travels in call 1)
#   .gpu/w2     the rest of the GGUF (~54 MiB)                (travels in call 2)
#   .gpu/serve  the faiss-cpu wheel                           (travels in call 3)
# It then prints the size of each call's transfer (source tree + carried paths) and fails if one
# exceeds the device's 64 MiB per call. Re-running reuses what is already there.
set -euo pipefail

DATA_SRC=""
PART_MIB=40
while [ $# -gt 0 ]; do
  case "$1" in
    --data) DATA_SRC="$2"; shift 2 ;;
    --part-mib) PART_MIB="$2"; shift 2 ;;
    *) echo "usage: bash benchmarks/gpu/pack.sh [--data DIR] [--part-mib N]" >&2; exit 2 ;;
  esac
done

cd "$(git rev-parse --show-toplevel)"
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PACK=.gpu
mkdir -p "$PACK/base/whl" "$PACK/serve/whl" "$PACK/w1" "$PACK/w2"
git check-ignore -q "$PACK/base" || { echo "error: $PACK/ is not git-ignored (.gitignore)" >&2; exit 1; }

# --- commit ---------------------------------------------------------------------------------
commit=$(git rev-parse --short HEAD)
git diff --quiet HEAD -- src benchmarks configs || commit="$commit-dirty"
echo "$commit" > "$PACK/base/COMMIT"

# --- ml-1m, prepared, with the minilm features KARMA's L_flow reconstructs ---------------------
DATA="$PACK/base/data/ml-1m"
if [ ! -f "$DATA/features/minilm.npy" ]; then
  rm -rf "$DATA"
  if [ -n "$DATA_SRC" ]; then
    mkdir -p "$(dirname "$DATA")" && cp -r "$DATA_SRC" "$DATA"
  else
    "$PY" -m karma data prepare ml-1m --out "$DATA"
  fi
  [ -f "$DATA/features/minilm.npy" ] || "$PY" -m karma data features "$DATA" --encoder minilm
fi

# --- SmolLM2-135M: config + tokenizer (no weights), and the GGUF in parts ---------------------
if [ ! -f "$PACK/base/smollm2/config.json" ]; then
  converted=$("$PY" -c "from karma.model.backbone import resolve_pretrained; print(resolve_pretrained('smollm2-135m'))" | tail -1)
  mkdir -p "$PACK/base/smollm2"
  for f in "$converted"/*; do
    case "$f" in *.safetensors) ;; *) cp "$f" "$PACK/base/smollm2/" ;; esac
  done
fi
gguf=$("$PY" -c "from karma.model.backbone import smollm2_gguf_path; print(smollm2_gguf_path())")
sha256sum "$gguf" | cut -d' ' -f1 > "$PACK/base/gguf.sha256"
rm -f "$PACK"/w*/gguf.part*
cut=$((PART_MIB * 1048576))
head -c "$cut" "$gguf" > "$PACK/w1/gguf.part00"
tail -c +$((cut + 1)) "$gguf" > "$PACK/w2/gguf.part01"
(cd "$PACK" && ls w1 w2 | grep gguf.part) > "$PACK/base/gguf.parts"

# --- wheels for packages the GPU machine lacks (same versions as here, CPython 3.12) ----------
download() {  # download DEST NAME==VERSION...
  local dest=$1; shift
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d "$dest" "$@" 2>&1 | grep -v "^WARNING: Location" || true
}
pins() {  # NAME... -> NAME==VERSION installed here
  "$PY" -c 'import sys, importlib.metadata as m; print(" ".join(f"{n}=={m.version(n)}" for n in sys.argv[1:]))' "$@"
}
BASE_WHEELS="gguf fastapi starlette pydantic pydantic-core uvicorn annotated-types typing-inspection annotated-doc typing-extensions opentelemetry-api"
rm -f "$PACK"/base/whl/*.whl "$PACK"/serve/whl/*.whl
# shellcheck disable=SC2046
download "$PACK/base/whl" $(pins $BASE_WHEELS)
# shellcheck disable=SC2046
download "$PACK/serve/whl" $(pins faiss-cpu)

# --- check: every wheel's requirements are carried or on the GPU machine ----------------------
"$PY" - "$PACK" <<'EOF'
import re, sys, zipfile
from pathlib import Path
from packaging.markers import default_environment
from packaging.requirements import Requirement

pack = Path(sys.argv[1])
kinds = Path("/work/.library/device/KINDS.md")
device = set()
if kinds.is_file():
    text = kinds.read_text()
    block = text.split("Packages:", 1)[1] if "Packages:" in text else ""
    device = {n.strip().strip(".").lower().replace("_", "-") for n in block.split(",")}
wheels = sorted(pack.glob("*/whl/*.whl"))
carried = {w.name.split("-")[0].lower().replace("_", "-") for w in wheels}
env = default_environment() | {"python_version": "3.12", "python_full_version": "3.12.3"}
missing = []
for wheel in wheels:
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        for line in z.read(meta).decode().splitlines():
            if not line.startswith("Requires-Dist:"):
                continue
            req = Requirement(line.split(":", 1)[1].strip())
            if req.marker and not req.marker.evaluate(env | {"extra": ""}):
                continue
            name = req.name.lower().replace("_", "-")
            if name not in carried and device and name not in device:
                missing.append(f"{wheel.name} needs {req}")
names = ", ".join(w.name for w in wheels)
print(f"wheels: {names}")
if missing:
    sys.exit("requirements neither carried nor on the GPU machine:\n  " + "\n  ".join(missing))
print("wheel requirements: all carried or on the GPU machine" + ("" if device else " (KINDS.md not found: unchecked)"))
EOF

# --- sizes per device call -------------------------------------------------------------------
mib() { du -sb "$@" 2>/dev/null | awk '{s += $1} END {printf "%.1f", s / 1048576}'; }
tree_bytes=$( { git ls-files -z; git ls-files -z -o --exclude-standard; } | xargs -0 -r stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
tree=$(awk -v b="$tree_bytes" 'BEGIN {printf "%.1f", b / 1048576}')
echo "pack sizes (MiB): source tree $tree | data $(mib "$DATA") | smollm2 config+tokenizer $(mib "$PACK/base/smollm2") | base wheels $(mib "$PACK/base/whl") | faiss wheel $(mib "$PACK/serve/whl") | GGUF parts $(mib "$PACK/w1") + $(mib "$PACK/w2")"
status=0
for call in "1:$PACK/base $PACK/w1" "2:$PACK/w2" "3:$PACK/serve"; do
  n=${call%%:*}; paths=${call#*:}
  # shellcheck disable=SC2086
  total=$(awk -v t="$tree" -v c="$(mib $paths)" 'BEGIN {printf "%.1f", t + c}')
  verdict=ok; awk -v x="$total" 'BEGIN {exit !(x > 62)}' && { verdict="OVER (limit 64 MiB, keep 2 spare)"; status=1; }
  echo "call $n carries ${paths// /, }: $total MiB with the source tree ($verdict)"
done
exit $status
