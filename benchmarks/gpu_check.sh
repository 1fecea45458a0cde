#!/usr/bin/env bash
# One command for the day a GPU is lent (H100/H200; Python 3.12, torch 2.11+cu130, nanobind,
# cmake, nvcc 13, compute-sanitizer; no internet, no mlx).  From the repository root:
#
#     bash benchmarks/gpu_check.sh
#
#   1. env        nvidia-smi, nvcc, python, torch versions
#   2. build      the CUDA extension for the GPU found (compute capability from nvidia-smi):
#                 `pip install --no-build-isolation --no-deps .` when scikit-build-core is
#                 importable, else (or if that fails) a plain cmake build staged with PYTHONPATH
#   3. pytest     tests/test_cuda_{gpu,ops,backend,ext}.py (MLX_ATTN_REQUIRE_CUDA_EXT=1)
#   3b. pytest_mlx  tests/test_cuda_gpu_mlx.py, test_cuda_mlx_ptx.py when mlx has CUDA
#   4. memcheck   compute-sanitizer --tool memcheck   on forward + backward, every configuration
#   5. racecheck  compute-sanitizer --tool racecheck  on the same script
#   6. bench      benchmarks/bench_cuda.py, default grid
#   7. ptxas      tests/test_cuda_ptxas.py's register / spill table (no GPU needed; last, cheap)
#
# Every step runs under `timeout`, within a total budget (GPU_CHECK_BUDGET_S, default 450 s, so
# the whole run stays under 8 minutes); a failing step is recorded and the next one runs.
# Results go to $OUT if set, else ./gpu_check_out:
#     gpu_check.json   every step's rc, seconds, log tail; pytest counts; benchmark rows
#     gpu_check.md     summary table, then the benchmark's Markdown tables and the ptxas table
#     logs/<step>.log  full output of each step
# Knobs: GPU_CHECK_BUDGET_S, GPU_CHECK_ARCH (e.g. 90, instead of detecting), GPU_CHECK_SKIP
# (comma list of step names), GPU_CHECK_HEADDIMS (e.g. "64;128": a faster, partial build; the
# tests of other head dims then fail), PYTHON (interpreter, default python3).
set -u

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
OUT_DIR="${OUT:-$ROOT/gpu_check_out}"
mkdir -p "$OUT_DIR/logs"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
PY="${PYTHON:-python3}"
BUDGET="${GPU_CHECK_BUDGET_S:-450}"
SKIP=",${GPU_CHECK_SKIP:-},"
START=$(date +%s)
STEPS="$OUT_DIR/steps.tsv"
: > "$STEPS"
export PYTHONDONTWRITEBYTECODE=1

log() { printf '[gpu_check %4ss] %s\n' "$(( $(date +%s) - START ))" "$*"; }

# Seconds a step may take: its cap, less what the later steps need at least (reserve).
allot() {
  local cap=$1 reserve=$2 left
  left=$(( BUDGET - ($(date +%s) - START) - reserve ))
  (( left > cap )) && left=$cap
  (( left < 10 )) && left=10
  echo "$left"
}

# run_step NAME CAP RESERVE CMD...: runs CMD (a program or an exported function, through bash)
# under timeout, logs to logs/NAME.log, records rc.
run_step() {
  local name=$1 cap=$2 reserve=$3
  shift 3
  if [[ "$SKIP" == *",$name,"* ]]; then
    printf '%s\tskipped\t0\t%s\n' "$name" "$OUT_DIR/logs/$name.log" >> "$STEPS"
    log "$name: skipped (GPU_CHECK_SKIP)"
    return 0
  fi
  local limit t0 rc
  limit=$(allot "$cap" "$reserve")
  log "$name: up to ${limit}s: $*"
  t0=$(date +%s)
  timeout -k 10 "$limit" bash -c '"$@"' run_step "$@" > "$OUT_DIR/logs/$name.log" 2>&1
  rc=$?
  (( rc == 124 || rc == 137 )) && echo "[gpu_check] $name: killed after ${limit}s" >> "$OUT_DIR/logs/$name.log"
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" "$OUT_DIR/logs/$name.log" >> "$STEPS"
  log "$name: rc=$rc in $(( $(date +%s) - t0 ))s"
  return "$rc"
}

# ---- 1. env ---------------------------------------------------------------------------------
env_info() {
  nvidia-smi || true
  command -v nvcc && nvcc --version
  "$PY" -c 'import sys, torch; print(sys.version); print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
  "$PY" -c 'import nanobind; print("nanobind", nanobind.__version__)'
  "$PY" -c 'import scikit_build_core; print("scikit-build-core", scikit_build_core.__version__)' || true
  command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null || true
  nproc
}
export -f env_info
run_step env 30 400 env_info

# ---- 2. build -------------------------------------------------------------------------------
ARCH="${GPU_CHECK_ARCH:-}"
if [[ -z "$ARCH" ]]; then
  ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | tr -d ' .')
fi
if [[ -z "$ARCH" ]]; then
  ARCH=$("$PY" -c 'import torch; a, b = torch.cuda.get_device_capability(0); print(f"{a}{b}")' 2>/dev/null)
fi
ARCH="${ARCH:-90}"
log "CUDA architecture: $ARCH"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
STAGE="$WORK/stage"
BUILD_MODE=none
HEADDIMS="${GPU_CHECK_HEADDIMS:-32;64;96;128;192;256}"

build_pip() {
  "$PY" -c 'import scikit_build_core' || { echo "scikit-build-core not importable"; return 3; }
  "$PY" -m pip install --no-build-isolation --no-deps --no-index -v . \
    -Ccmake.define.CMAKE_CUDA_ARCHITECTURES="$ARCH" -Ccmake.define.MLX_ATTN_CUDA_HEADDIMS="$HEADDIMS" \
    -Ccmake.define.MLX_ATTN_BUILD_CUDA=ON -Ccmake.define.MLX_ATTN_BUILD_CPU=OFF
}

build_cmake() {
  local gen=(-G "Unix Makefiles") so
  command -v ninja > /dev/null && gen=(-G Ninja)
  cmake "${gen[@]}" -S . -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release \
    -DMLX_ATTN_BUILD_CPU=OFF -DMLX_ATTN_BUILD_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$ARCH" \
    -DMLX_ATTN_CUDA_HEADDIMS="$HEADDIMS" \
    -DPython_EXECUTABLE="$(command -v "$PY")" || return $?
  cmake --build "$WORK/build" --parallel "$CMAKE_BUILD_PARALLEL_LEVEL" || return $?
  so=$(find "$WORK/build" -name '_cuda*.so' | head -n1)
  [[ -n "$so" ]] || { echo "no _cuda*.so built"; return 4; }
  mkdir -p "$STAGE" && cp -r src/mlx_attn "$STAGE/" && cp "$so" "$STAGE/mlx_attn/backends/cuda/"
  # the PTX of the MLX entry points (package data in a wheel)
  mkdir -p "$STAGE/mlx_attn/backends/cuda/kernels"
  cp "$WORK"/build/cuda_bridge/mlx_ptx/*.ptx.gz "$STAGE/mlx_attn/backends/cuda/kernels/" 2> /dev/null || true
}

check_ext() {
  "$PY" -c '
from mlx_attn.backends.cuda.extension import extension, load_error
ext = extension()
if ext is None:
    raise SystemExit(f"extension not importable: {load_error()}")
print("archs", ext.archs(), "head dims", ext.head_dims(), "devices", ext.device_count())
print("image error for device 0:", repr(ext.kernel_image_error(0)))'
}

export PY ARCH WORK STAGE HEADDIMS
export -f build_pip build_cmake check_ext
if [[ "$SKIP" != *",build_pip,"* ]] && run_step build_pip 240 200 build_pip \
   && run_step check_ext 30 200 check_ext; then
  BUILD_MODE=pip
elif run_step build_cmake 240 170 build_cmake; then
  export PYTHONPATH="$STAGE${PYTHONPATH:+:$PYTHONPATH}"
  run_step check_ext_cmake 30 170 check_ext && BUILD_MODE=cmake
fi
log "build mode: $BUILD_MODE"

# ---- 3. pytest ------------------------------------------------------------------------------
PYTEST_ARGS=(-q -p no:cacheprovider -rfE --junitxml="$OUT_DIR/pytest.xml")
"$PY" -c 'import xdist' 2> /dev/null && PYTEST_ARGS+=(-n 4)
run_step pytest 200 120 env MLX_ATTN_REQUIRE_CUDA_EXT=1 "$PY" -m pytest "${PYTEST_ARGS[@]}" \
  tests/test_cuda_gpu.py tests/test_cuda_ops.py tests/test_cuda_backend.py tests/test_cuda_ext.py

# ---- 3b. MLX arrays on the CUDA kernels, when an mlx[cuda] wheel is installed -----------------
if "$PY" -c 'import sys, mlx.core as mx; sys.exit(0 if mx.cuda.is_available() else 1)' 2> /dev/null; then
  run_step pytest_mlx 150 100 "$PY" -m pytest -q -p no:cacheprovider -rfE \
    tests/test_cuda_gpu_mlx.py tests/test_cuda_mlx_ptx.py
else
  log "pytest_mlx: no mlx with CUDA here (pip install 'mlx[cuda13]'): the MLX path is not checked"
fi

# ---- 4-5. compute-sanitizer -----------------------------------------------------------------
SANITIZER=$(command -v compute-sanitizer)
if [[ -z "$SANITIZER" ]]; then
  for cand in /usr/local/cuda*/bin/compute-sanitizer /usr/local/cuda*/compute-sanitizer/compute-sanitizer; do
    [[ -x "$cand" ]] && { SANITIZER=$cand; break; }
  done
fi
cat > "$WORK/sanitize_case.py" <<'PYEOF'
# Forward + backward of the CUDA kernels on a few small shapes, under every forced configuration
# (prefill, decode, split-KV + combine), for compute-sanitizer.
import torch
from mlx_attn import flash_attention
from mlx_attn.backends.cuda.extension import extension

ext = extension()
cases = [  # B, Hq, Hkv, Lq, Lk, D, keywords
    (1, 4, 2, 33, 77, 64, dict(causal=True)),
    (1, 8, 2, 3, 300, 128, dict(window=(40, 3))),
    (1, 2, 2, 130, 129, 192, dict(softcap=5.0)),
    (2, 2, 1, 17, 70, 96, dict(mask="bool")),
    (1, 2, 2, 9, 40, 256, dict(causal=True)),
]
for config in [(0, 1), (1, 1), (1, 3)]:
    ext.set_plan_override(*config)
    for B, Hq, Hkv, Lq, Lk, D, kw in cases:
        g = torch.Generator(device="cuda").manual_seed(0)
        mk = lambda *s: torch.randn(*s, generator=g, device="cuda", dtype=torch.bfloat16)
        q, k, v = mk(B, Hq, Lq, D), mk(B, Hkv, Lk, D), mk(B, Hkv, Lk, D)
        q, k, v = (x.requires_grad_() for x in (q, k, v))
        kw = dict(kw)
        if kw.get("mask") == "bool":
            kw["mask"] = torch.rand(B, 1, Lq, Lk, generator=g, device="cuda") > 0.3
        out = flash_attention(q, k, v, backend="cuda", **kw)
        torch.autograd.grad(out, (q, k, v), torch.randn_like(out))
        torch.cuda.synchronize()
    print("config", config, "ok", flush=True)
ext.set_plan_override(-1, 0)
PYEOF

sanitize() {
  local tool=$1 filter=(--print-limit 50)
  [[ -n "$SANITIZER" ]] || { echo "compute-sanitizer not found"; return 5; }
  # instrument only our kernels (namespace mlx_attn_cuda) when the option exists: much faster
  "$SANITIZER" --help 2>&1 | grep -q -- '--kernel-name' && filter+=(--kernel-name kns=mlx_attn_cuda)
  # no caching allocator: every tensor its own allocation, so memcheck sees out-of-bounds
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SANITIZER" --tool "$tool" --error-exitcode 9 \
    "${filter[@]}" "$PY" "$WORK/sanitize_case.py"
}
export SANITIZER
export -f sanitize
run_step memcheck 90 100 sanitize memcheck
run_step racecheck 90 60 sanitize racecheck

# ---- 6. bench -------------------------------------------------------------------------------
run_step bench 180 15 "$PY" benchmarks/bench_cuda.py
cp "$OUT_DIR/logs/bench.log" "$OUT_DIR/bench_cuda.md" 2> /dev/null

# ---- 7. ptxas -------------------------------------------------------------------------------
run_step ptxas 40 0 "$PY" tests/test_cuda_ptxas.py

# ---- summary --------------------------------------------------------------------------------
"$PY" - "$OUT_DIR" "$BUILD_MODE" "$ARCH" "$(( $(date +%s) - START ))" <<'PYEOF'
import json, re, sys, xml.etree.ElementTree as ET
from pathlib import Path

out, mode, arch, total = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
steps = []
for line in (out / "steps.tsv").read_text().splitlines():
    name, rc, secs, logf = line.split("\t")
    text = Path(logf).read_text(errors="replace") if Path(logf).exists() else ""
    steps.append({"step": name, "rc": rc, "seconds": int(secs), "log": logf,
                  "tail": text[-3000:]})
summary = {"arch": arch, "build_mode": mode, "total_seconds": total, "steps": steps}
try:
    suite = ET.parse(out / "pytest.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    summary["pytest"] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
except Exception as error:  # no junit file: pytest did not run or was killed
    summary["pytest"] = {"unavailable": f"{type(error).__name__}: {error}"}
for s in steps:
    if s["step"] in ("memcheck", "racecheck"):
        m = re.findall(r"(ERROR|RACECHECK) SUMMARY: (\d+)", s["tail"])
        s["sanitizer_errors"] = int(m[-1][1]) if m else None
bench = (out / "bench_cuda.md").read_text(errors="replace") if (out / "bench_cuda.md").exists() else ""
tables, title, head = [], None, None
for line in bench.splitlines():
    if line.startswith("###"):
        title, head = line.lstrip("# ").strip(), None
    elif line.startswith("|") and "---" not in line:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if head is None:
            head = cells
        else:
            tables.append({"table": title, **dict(zip(head, cells))})
summary["bench_rows"] = tables
(out / "gpu_check.json").write_text(json.dumps(summary, indent=2))
md = [f"# gpu_check: sm_{arch}, build {mode}, {total} s", "",
      "| step | rc | seconds |", "| --- | --- | --- |"]
md += [f"| {s['step']} | {s['rc']} | {s['seconds']} |" for s in steps]
md += ["", f"pytest: {summary['pytest']}", ""]
md += [f"{s['step']}: {s.get('sanitizer_errors')} errors" for s in steps if "sanitizer_errors" in s]
md += ["", "## bench_cuda.py", "", bench.strip() or "(no output)"]
ptxas = out / "logs" / "ptxas.log"
if ptxas.exists():
    md += ["", "## ptxas (tests/test_cuda_ptxas.py)", "", ptxas.read_text(errors="replace").strip()]
(out / "gpu_check.md").write_text("\n".join(md) + "\n")
print("\n".join(md[: 6 + len(steps) + 2]))
PYEOF
rm -rf "$WORK"
log "done: $OUT_DIR/gpu_check.json, $OUT_DIR/gpu_check.md"
