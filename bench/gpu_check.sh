#!/usr/bin/env bash
# The one-shot GPU check: install the project offline, then bench/gpu_check.py -> ONE JSON.
#
#   bench/gpu_check.sh --fetch-wheels              networked machine, once: .whl/wheelhouse.tar.xz (carry .whl)
#   bench/gpu_check.sh --out DIR                   GPU machine (no network): DIR/gpu_check.json in <= 8 min
#   bench/gpu_check.sh --rehearse --out DIR        the same on the CPU, small sizes, in a fresh venv under /tmp
#   bench/gpu_check.sh --rehearse --reuse-env --out DIR
#                                                  CI: no venv/build; the offline resolution is still checked
# Options: --wheelhouse DIR (default .whl), --budget S (default 480: the whole run, install included),
#   --only SECTION... (gpu_check.py sections), --venv (GPU run: install into a venv, not the machine's python),
#   --python PY (default python3), --tree DIR (an existing checkpoint tree).
# Writes under DIR: gpu_check.json, gpu_check.log, install.json, install.log, build.log, machine.txt.
# See bench/gpu_check.py's docstring for what is measured.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
OUT="" REHEARSE=0 REUSE=0 FETCH=0 USE_VENV=0 TREE=""
WHEELHOUSE="$ROOT/.whl"
BUDGET=${GPU_CHECK_SECONDS:-480}
PY=${PYTHON:-python3}
ONLY=()
# The GPU machine (KINDS.md): Python 3.12, torch 2.11, triton 3.6, cupy, nvcc, cmake, ninja, pybind11,
# scikit-build-core, onnx, onnxruntime, opencv, numpy; NO PyAV, NO soxr. The wheelhouse carries those two,
# plus the build backend at the versions this project builds with (pure wheels, 0.6 MB) in case the
# machine's are older than pyproject.toml's build-system asks.
GPU_PYTHON=3.12
WHEEL_PINS=(av==18.1.0 soxr==1.1.0 scikit-build-core==1.1.2 pybind11==3.1.0)
WHEEL_REQS=("av>=12" "soxr>=0.3" "scikit-build-core>=0.10" "pybind11>=2.13")  # pyproject.toml's own bounds
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64)
CARRY_LIMIT=$((64 * 1024 * 1024))

while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --rehearse) REHEARSE=1; shift ;;
    --reuse-env) REUSE=1; shift ;;
    --fetch-wheels) FETCH=1; shift ;;
    --wheelhouse) WHEELHOUSE=$(cd "$2" 2>/dev/null && pwd || echo "$2"); shift 2 ;;
    --budget) BUDGET=$2; shift 2 ;;
    --python) PY=$2; shift 2 ;;
    --venv) USE_VENV=1; shift ;;
    --tree) TREE=$2; shift 2 ;;
    --only) shift; while [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; do ONLY+=("$1"); shift; done ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

tree_bytes() {  # what the device tool carries besides the wheelhouse: tracked + untracked-not-ignored files
  (cd "$ROOT" && git ls-files -co --exclude-standard -z 2>/dev/null | xargs -0 stat -c %s 2>/dev/null |
    awk '{s += $1} END {print s + 0}')
}

if [ "$FETCH" = 1 ]; then
  # Wheels for the GPU's interpreter, unpacked and packed again as one xz tarball: the PyAV wheel alone is
  # 36 MB zipped, 25 MB this way, and tree + wheelhouse must stay under 64 MiB. The GPU run zips them again.
  tmp=$(mktemp -d) || exit 1
  trap 'rm -rf "$tmp"' EXIT
  args=(--no-deps --only-binary=:all: --python-version "$GPU_PYTHON" --implementation cp)
  for p in "${PLATFORMS[@]}"; do args+=(--platform "$p"); done
  "$PY" -m pip download -q "${args[@]}" -d "$tmp/wheels" "${WHEEL_PINS[@]}" || exit 1
  "$PY" - "$tmp/wheels" "$tmp/unpacked" <<'EOF' || exit 1
import sys, zipfile, pathlib
src, dst = map(pathlib.Path, sys.argv[1:])
for wheel in sorted(src.glob("*.whl")):
    zipfile.ZipFile(wheel).extractall(dst / wheel.name)   # the folder keeps the wheel's file name
    print(f"  {wheel.name}: {wheel.stat().st_size / 2**20:.1f} MiB")
EOF
  mkdir -p "$WHEELHOUSE" && rm -f "$WHEELHOUSE"/*.whl "$WHEELHOUSE/wheelhouse.tar.xz"
  echo "packing (xz -9, a minute or two) ..."
  tar -C "$tmp/unpacked" -cf - . | xz -9 -T0 > "$WHEELHOUSE/wheelhouse.tar.xz" || exit 1
  wh=$(stat -c %s "$WHEELHOUSE/wheelhouse.tar.xz"); tb=$(tree_bytes)
  printf 'wheelhouse %s: %.1f MiB; tree %.1f MiB; together %.1f of 64 MiB\n' "$WHEELHOUSE/wheelhouse.tar.xz" \
    "$(echo "$wh / 1048576" | bc -l)" "$(echo "$tb / 1048576" | bc -l)" "$(echo "($wh + $tb) / 1048576" | bc -l)"
  if [ $((wh + tb)) -gt $CARRY_LIMIT ]; then echo "gpu_check.sh: over the 64 MiB the device tool carries" >&2; exit 1; fi
  echo "carry it: run(command='bench/gpu_check.sh --out \$OUT', carry=['.whl'])"
  exit 0
fi

[ -n "$OUT" ] || { echo "gpu_check.sh: --out DIR is required (see --help)" >&2; exit 2; }
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
START=$(date +%s)
DEADLINE=$((START + BUDGET - 10))  # 10 s kept for the last save and the summary
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
elapsed() { echo $(( $(date +%s) - START )); }
say() { echo "[gpu_check $(elapsed)s] $*" | tee -a "$OUT/install.log"; }
: > "$OUT/install.log"; : > "$OUT/install_steps.jsonl"

# step NAME TIMEOUT CMD...: run, log, and record {"name", "rc", "seconds", "command"} for install.json.
step() {
  local name=$1 limit=$2; shift 2
  local t0; t0=$(date +%s.%N)
  say "$name: $*"
  timeout "$limit" "$@" >> "$OUT/install.log" 2>&1
  local rc=$?
  local secs; secs=$(echo "$(date +%s.%N) - $t0" | bc -l)
  "$PY" -c 'import json, sys; print(json.dumps({"name": sys.argv[1], "rc": int(sys.argv[2]),
    "seconds": round(float(sys.argv[3]), 2), "command": sys.argv[4:]}))' "$name" "$rc" "$secs" "$@" \
    >> "$OUT/install_steps.jsonl"
  say "$name: rc=$rc ($(printf '%.1f' "$secs") s)"
  return $rc
}
note() {  # a step that did not run, and why
  "$PY" -c 'import json, sys; print(json.dumps({"name": sys.argv[1], "rc": None, "skipped": sys.argv[2]}))' \
    "$1" "$2" >> "$OUT/install_steps.jsonl"
  say "$1: skipped: $2"
}

{ command -v nvidia-smi >/dev/null && nvidia-smi; "$PY" -V; uname -a; nproc; free -g 2>/dev/null; } \
  > "$OUT/machine.txt" 2>&1

# -- the wheelhouse: a tarball from --fetch-wheels (zipped again here), or plain wheels ------------------------
WH=""
if [ -f "$WHEELHOUSE/wheelhouse.tar.xz" ]; then
  WH=/tmp/ditto_gpu_check_wheels
  rm -rf "$WH" && mkdir -p "$WH/unpacked"
  step wheels_unpack 120 bash -c "xz -dc '$WHEELHOUSE/wheelhouse.tar.xz' | tar -C '$WH/unpacked' -xf - && '$PY' - '$WH' <<'EOF'
import os, pathlib, sys, zipfile
wh = pathlib.Path(sys.argv[1])
for folder in sorted((wh / 'unpacked').iterdir()):
    with zipfile.ZipFile(wh / folder.name, 'w', zipfile.ZIP_STORED) as z:  # stored: pip installs it the same
        for path in sorted(folder.rglob('*')):
            if path.is_file():
                z.write(path, path.relative_to(folder).as_posix())
    print(folder.name)
EOF" || WH=""
elif compgen -G "$WHEELHOUSE/*.whl" > /dev/null; then
  WH=$WHEELHOUSE
fi
[ -n "$WH" ] || say "no wheelhouse at $WHEELHOUSE (bench/gpu_check.sh --fetch-wheels makes one)"

# -- the interpreter the project is installed into ------------------------------------------------------------
MODE=gpu
[ "$REHEARSE" = 1 ] && MODE=rehearsal
RUNPY=$PY
if [ "$REUSE" = 1 ]; then
  INSTALL_MODE="reuse-env: the current environment's ditto_fast; install steps checked by dry runs only"
elif [ "$REHEARSE" = 1 ] || [ "$USE_VENV" = 1 ]; then
  # A fresh venv that sees the current interpreter's packages (torch...) through plain path lines: their
  # .pth hooks do not run there, so an editable ditto_fast in the current environment stays out of it.
  VENV=/tmp/ditto_gpu_check_venv
  rm -rf "$VENV"
  step venv 60 "$PY" -m venv --without-pip "$VENV"
  "$PY" - "$VENV" <<'EOF'
import pathlib, site, sys, sysconfig
venv = pathlib.Path(sys.argv[1])
target = next(venv.glob("lib/python*/site-packages"))
parents = [p for p in dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"],
                                     *site.getsitepackages(), *[p for p in sys.path if p.endswith("-packages")]])]
(target / "_gpu_check_parent.pth").write_text("\n".join(parents) + "\n")
EOF
  RUNPY=$VENV/bin/python
  INSTALL_MODE="venv $VENV (sees $PY's packages)"
else
  INSTALL_MODE="the machine's python ($PY)"
fi

CUDA_FLAGS=()
CUDA_MODE=AUTO
if [ "$REHEARSE" = 0 ] && command -v nvcc >/dev/null; then
  CUDA_MODE=ON; CUDA_FLAGS=(-C cmake.define.DITTO_FAST_CUDA_ARCHITECTURES=90)  # H100/H200: sm_90 only, to save time
fi
PIPW=("$RUNPY" -m pip)
FIND=(--no-index)
[ -n "$WH" ] && FIND+=(--find-links "$WH")

if [ "$REUSE" = 0 ]; then
  # 1. the wheels the machine lacks (a no-op where they are installed already)
  if [ -n "$WH" ]; then step wheels_install 180 "${PIPW[@]}" install -q "${FIND[@]}" "${WHEEL_REQS[@]}"
  else note wheels_install "no wheelhouse"; fi
  # 2. every dependency of the project resolves offline (nothing would be fetched)
  step resolve 180 "${PIPW[@]}" install --dry-run "${FIND[@]}" --no-build-isolation "$ROOT"
  # 3. the build: from the tree, no build isolation, the machine's cmake/ninja/nvcc; its own build folder
  BUILD=/tmp/ditto_gpu_check_build
  if ! step build 300 env DITTO_FAST_CUDA=$CUDA_MODE "${PIPW[@]}" install -v --no-index --no-build-isolation \
      --no-deps --ignore-installed -C build-dir="$BUILD" "${CUDA_FLAGS[@]}" "$ROOT"; then
    if [ "$CUDA_MODE" = ON ]; then
      say "the CUDA build failed: building without CUDA so the rest still runs (core.cuda_compiled will say so)"
      step build_without_cuda 300 env DITTO_FAST_CUDA=OFF "${PIPW[@]}" install -v --no-index --no-build-isolation \
        --no-deps --ignore-installed -C build-dir="$BUILD-nocuda" "$ROOT"
    fi
  fi
  cp "$OUT/install.log" "$OUT/build.log" 2>/dev/null
else
  note wheels_install "--reuse-env"
  note build "--reuse-env"
  step resolve 180 "$PY" -m pip install --dry-run "${FIND[@]}" --no-build-isolation "$ROOT"
fi
# 4. the GPU's interpreter gets every carried requirement from the wheelhouse (checked here for cp$GPU_PYTHON)
if [ -n "$WH" ]; then
  targs=(--dry-run --ignore-installed --no-deps --only-binary=:all: --python-version "$GPU_PYTHON" --implementation cp)
  for p in "${PLATFORMS[@]}"; do targs+=(--platform "$p"); done
  step resolve_gpu_wheels 120 "$PY" -m pip install "${targs[@]}" "${FIND[@]}" --target /tmp/ditto_gpu_check_target \
    "${WHEEL_REQS[@]}"
else
  note resolve_gpu_wheels "no wheelhouse: run bench/gpu_check.sh --fetch-wheels on a networked machine"
fi
# 5. the installed package imports from outside the tree, with its compiled core
step import 60 bash -c "cd /tmp && '$RUNPY' -c 'import ditto_fast, ditto_fast._core as c, sys
print(ditto_fast.__file__, \"cuda_compiled\", c.cuda_compiled, c.cuda_architectures)
sys.exit(0 if $REUSE or not ditto_fast.__file__.startswith(\"$ROOT/\") else 3)'"

"$PY" - "$OUT" "$MODE" "$INSTALL_MODE" "$WH" "$WHEELHOUSE" "$(elapsed)" <<'EOF'
import json, pathlib, sys
out, mode, install_mode, wh, wheelhouse, elapsed = sys.argv[1:]
steps = [json.loads(l) for l in (pathlib.Path(out) / "install_steps.jsonl").read_text().splitlines() if l.strip()]
tar = pathlib.Path(wheelhouse) / "wheelhouse.tar.xz"
record = {"mode": install_mode, "run": mode, "wheelhouse": wh or None,
          "wheelhouse_mib": round(tar.stat().st_size / 2**20, 2) if tar.is_file() else None,
          "wheels": sorted(p.name for p in pathlib.Path(wh).glob("*.whl")) if wh else [],
          "seconds": int(elapsed), "steps": steps}
(pathlib.Path(out) / "install.json").write_text(json.dumps(record, indent=1))
EOF

# -- the check itself, in what is left of the budget -----------------------------------------------------------
left=$((DEADLINE - $(date +%s)))
say "gpu_check.py: $left s left"
CHECK_ARGS=(--out "$OUT/gpu_check.json" --deadline "$DEADLINE" --install-json "$OUT/install.json")
[ "$REHEARSE" = 1 ] && CHECK_ARGS+=(--rehearse)
[ -n "$TREE" ] && CHECK_ARGS+=(--tree "$TREE")
[ ${#ONLY[@]} -gt 0 ] && CHECK_ARGS+=(--only "${ONLY[@]}")
(cd "$ROOT" && timeout --kill-after=10 $((left + 30)) "$RUNPY" "$HERE/gpu_check.py" "${CHECK_ARGS[@]}") \
  2>&1 | tee "$OUT/gpu_check.log" | tail -n 40
rc=${PIPESTATUS[0]}
say "gpu_check.py rc=$rc; total $(elapsed) s; $OUT/gpu_check.json"
exit "$rc"
