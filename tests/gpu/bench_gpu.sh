#!/bin/sh
# make bench-gpu: postformer on cuda beside PyTorch eager float32 (Hugging Face transformers'
# LlamaForCausalLM, MambaForCausalLM, MixtralForCausalLM with tiny configs of the same sizes) on the
# same GPU in the same run: training tokens/s, stepping us/token (theirs: generate), ratios, at two
# sizes (dim 256, 4 layers, seq 512 and dim 512, 8 layers, seq 1024; batch 8); then the attention
# forward alone against torch's scaled_dot_product_attention and the selective scan alone against a
# PyTorch sequential scan; then our other recurrent layers, which transformers has no peer for.
# TF32 off on both sides. Needs an NVIDIA GPU and a python3 with torch and transformers.
BUILD=${BUILD:-build}
cd "$(dirname "$0")/../.." || exit 2
tmp=$(mktemp -d) || exit 2
trap 'rm -rf "$tmp"' EXIT
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
echo "date $(date -u +%Y-%m-%d), GPU: ${gpu:-none}"
rep() { r=$1; n=$2; out=""; i=0; while [ $i -lt "$n" ]; do out="$out${out:+,}$r"; i=$((i + 1)); done; echo "$out"; }
"$BUILD"/tests/gpu/test_parity --bench > "$tmp/parity.txt" 2>&1
sed -n '/attention forward timing/,$p' "$tmp/parity.txt" | tee "$tmp/kernels.txt"
kernels=1
for size in "256 4 512" "512 8 1024"; do
    set -- $size
    dim=$1 n=$2 seq=$3
    sizes="--vocab 256 --dim $dim --seq $seq --batch 8"
    : > "$tmp/ours.jsonl"
    for cfg in "llama $(rep attention,mlp "$n")" "mamba $(rep mamba "$n")" "mixtral $(rep attention,moe "$n")"; do
        name=${cfg%% *}
        layers=${cfg#* }
        line=$("$BUILD"/bench --device cuda --layers "$layers" $sizes --steps 10 --gen 256) || exit 1
        echo "$line" | sed "s/^{/{\"config\":\"$name\",/" | tee -a "$tmp/ours.jsonl"
    done
    PYTHONUNBUFFERED=1 python3 tests/gpu/peer_hf.py --ours "$tmp/ours.jsonl" --attn "$tmp/kernels.txt" \
        --layers "$n" --kernels $kernels $sizes
    kernels=0
done
echo
echo "postformer alone (no transformers peer), vocab 256, dim 256, 4 layers, seq 512, batch 8:"
for layer in mamba2 retention gla; do
    "$BUILD"/bench --device cuda --layers "$(rep $layer 4)" --vocab 256 --dim 256 --seq 512 --batch 8 \
        --steps 10 --gen 256 | sed "s/^{/{\"config\":\"$layer\",/"
done
