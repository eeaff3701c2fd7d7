#!/bin/sh
# make bench-gpu: postformer on cuda beside PyTorch eager float32 (Hugging Face transformers'
# LlamaForCausalLM, MambaForCausalLM, MixtralForCausalLM with tiny configs of the same sizes) on the
# same GPU in the same run: training tokens/s, stepping us/token (theirs: generate), ratios; then the
# attention forward alone against torch's scaled_dot_product_attention. TF32 off on both sides.
# Needs an NVIDIA GPU and a python3 with torch and transformers; prints the table last.
BUILD=${BUILD:-build}
cd "$(dirname "$0")/../.." || exit 2
tmp=$(mktemp -d) || exit 2
trap 'rm -rf "$tmp"' EXIT
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
echo "date $(date -u +%Y-%m-%d), GPU: ${gpu:-none}"
sizes="--vocab 256 --dim 256 --seq 512 --batch 8"
rep() { r=$1; n=$2; out=""; i=0; while [ $i -lt "$n" ]; do out="$out${out:+,}$r"; i=$((i + 1)); done; echo "$out"; }
for cfg in "llama $(rep attention,mlp 4)" "mamba $(rep mamba 4)" "mixtral $(rep attention,moe 4)"; do
    name=${cfg%% *}
    layers=${cfg#* }
    line=$("$BUILD"/bench --device cuda --layers "$layers" $sizes --steps 10 --gen 256) || exit 1
    echo "$line" | sed "s/^{/{\"config\":\"$name\",/" | tee -a "$tmp/ours.jsonl"
done
"$BUILD"/tests/gpu/test_parity --bench > "$tmp/parity.txt" 2>&1
sed -n '/attention forward timing/,$p' "$tmp/parity.txt" | tee "$tmp/attn.txt"
PYTHONUNBUFFERED=1 python3 tests/gpu/peer_hf.py --ours "$tmp/ours.jsonl" --attn "$tmp/attn.txt" $sizes
