#!/usr/bin/env bash
# GPU check of sharded training (issue 22), at most ~5 minutes on one GPU:
#   FSDP2 (bf16) and DeepSpeed ZeRO-3, 2 steps each, of a small Qwen2 hf-a2d: backbone with the KV cache
#   (cache: dual), a KL reference and gradient checkpointing; then save, load in one process, and resume
#   for 2 more steps (bit-exact with 4 uninterrupted steps is what tests/test_trainer_sharded.py checks on CPU).
# Prints step times, peak GPU memory and PASS/FAIL per check; exits 1 if any check failed.
#   scripts/gpu_check.sh [WORKDIR]        (ZeRO-3 is skipped when deepspeed is not importable)
set -u -o pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-$(mktemp -d /tmp/lavida_gpu_check.XXXXXX)}"
PY="${PYTHON:-python}"
export PYTHONPATH="$ROOT:$ROOT/tests${PYTHONPATH:+:$PYTHONPATH}"
cd "$ROOT" || exit 1
mkdir -p "$WORK"
failed=0

report() {  # name status
  printf '%-28s %s\n' "$1" "$2"
  [ "$2" = PASS ] || [ "$2" = SKIP ] || failed=1
}

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "no CUDA device: nothing to check"; exit 1
fi
"$PY" -c "from tiny_dllm import save_qwen2; save_qwen2('$WORK/qwen2', hidden=256, layers=4)" || exit 1

COMMON=(--config tests/fixtures/trainer/sharded.yaml --policy "hf-a2d:$WORK/qwen2" --mixed_precision bf16
        --gradient_checkpointing true --cache dual --regularizer kl --sft_steps 1 --max_steps 1 --save_every 2
        --eval_episodes 0)

single_gpu_config() {  # kind file: a 1-process copy of configs/accelerate/<kind>.yaml
  sed -e 's/^num_processes: .*/num_processes: 1/' "configs/accelerate/$1.yaml" > "$2"
}

run_check() {  # name launch_config out extra...
  local name=$1 config=$2 out=$3
  shift 3
  local log="$out.log"
  if timeout 240 accelerate launch --config_file "$config" scripts/gpu_check_worker.py "${COMMON[@]}" \
       --output_dir "$out" "$@" > "$log" 2>&1; then
    grep '^GPU_CHECK ' "$log" | sed 's/^GPU_CHECK /  /'
    report "$name" PASS
  else
    tail -20 "$log"
    report "$name" FAIL
  fi
}

single_gpu_config fsdp2 "$WORK/fsdp2.yaml"
run_check "fsdp2 bf16 2 steps" "$WORK/fsdp2.yaml" "$WORK/fsdp2"
if [ -d "$WORK/fsdp2/checkpoint-2" ]; then
  run_check "fsdp2 resume 2+2" "$WORK/fsdp2.yaml" "$WORK/fsdp2_resumed" --max_steps 3 \
    --resume_from "$WORK/fsdp2/checkpoint-2"
  if "$PY" - "$WORK/fsdp2/checkpoint-2" <<'PYEOF'
import sys
from agents.hf.policy import HFDiffusionPolicy
policy = HFDiffusionPolicy.from_pretrained(sys.argv[1])
print(f"  loaded in one process: {sum(p.numel() for p in policy.model.parameters()):,} parameters")
PYEOF
  then report "fsdp2 checkpoint loads" PASS; else report "fsdp2 checkpoint loads" FAIL; fi
else
  report "fsdp2 resume 2+2" FAIL
fi

if "$PY" -c "import deepspeed" 2> /dev/null; then
  single_gpu_config zero3 "$WORK/zero3.yaml"
  run_check "zero3 bf16 2 steps" "$WORK/zero3.yaml" "$WORK/zero3"
else
  report "zero3 bf16 2 steps" SKIP
  echo "  (deepspeed is not installed: pip install deepspeed)"
fi

[ "$failed" = 0 ] && echo "gpu_check: PASS" || echo "gpu_check: FAIL"
exit "$failed"
