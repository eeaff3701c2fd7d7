#!/usr/bin/env python3
"""The GPU benchmark's peers (tests/gpu/bench_gpu.sh): the same three models in PyTorch eager float32
on the same GPU, from Hugging Face transformers with tiny configs of postformer's sizes:

  llama    LlamaForCausalLM    4 layers of attention (4 heads, RoPE) + SwiGLU MLP (hidden 8/3 dim)
  mamba    MambaForCausalLM    4 Mamba blocks (state 16, expand 2, conv 4, dt_rank dim/16)
  mixtral  MixtralForCausalLM  4 layers of attention + MoE (8 SwiGLU experts, top-2)

untied head, no biases (as postformer's). Training: random tokens, AdamW, clip 1.0; tokens/s over
timed steps after warm-up. Stepping: generate() greedy with the KV cache / recurrent state, us per
new token. Then scaled_dot_product_attention (causal, float32) at the sizes of postformer's attention
timing. TF32 is off for matmuls (torch's default). Prints JSON lines, then the table with ratios
(higher is better for postformer in both ratios)."""
import argparse, json, re, time
import torch
import torch.nn.functional as F
import transformers as tf

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


def make(name, vocab, dim, layers):
    hidden = (8 * dim // 3 + 7) // 8 * 8
    common = dict(vocab_size=vocab, hidden_size=dim, num_hidden_layers=layers, tie_word_embeddings=False)
    if name == "llama":
        cfg = tf.LlamaConfig(intermediate_size=hidden, num_attention_heads=4, num_key_value_heads=4,
                             max_position_embeddings=4096, rms_norm_eps=1e-5, **common)
        return tf.LlamaForCausalLM(cfg)
    if name == "mamba":
        cfg = tf.MambaConfig(state_size=16, expand=2, conv_kernel=4, **common)
        return tf.MambaForCausalLM(cfg)
    cfg = tf.MixtralConfig(intermediate_size=hidden, num_attention_heads=4, num_key_value_heads=4,
                           num_local_experts=8, num_experts_per_tok=2, max_position_embeddings=4096,
                           rms_norm_eps=1e-5, **common)
    return tf.MixtralForCausalLM(cfg)


def bench_model(name, a):
    torch.manual_seed(0)
    m = make(name, a.vocab, a.dim, a.layers).cuda().float()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    x = torch.randint(0, a.vocab, (a.batch, a.seq), device="cuda")
    steps, warm = (3, 1) if name == "mamba" else (10, 2)
    for s in range(warm + steps):
        if s == warm:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        loss = m(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
    torch.cuda.synchronize()
    train = steps * a.batch * a.seq / (time.perf_counter() - t0)
    m.eval()
    gen = 64 if name == "mamba" else 128
    inp = torch.tensor([[1]], device="cuda")
    kw = dict(do_sample=False, pad_token_id=0, eos_token_id=None, use_cache=True)
    with torch.no_grad():
        m.generate(inp, max_new_tokens=8, min_new_tokens=8, **kw)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = m.generate(inp, max_new_tokens=gen, min_new_tokens=gen, **kw)
        torch.cuda.synchronize()
    new = out.shape[1] - 1
    step_us = (time.perf_counter() - t0) / new * 1e6
    r = {"impl": "transformers " + tf.__version__, "config": name, "train_tokens_per_s": round(train, 1),
         "step_us_per_token": round(step_us, 2), "params": sum(p.numel() for p in m.parameters())}
    print(json.dumps(r))
    del m, opt
    torch.cuda.empty_cache()
    return r


def bench_sdpa(T, H, D, B=4):
    q, k, v = (torch.randn(B, H, T, D, device="cuda") for _ in range(3))
    times = []
    for i in range(23):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        F.scaled_dot_product_attention(q, k, v, is_causal=True)
        e.record()
        torch.cuda.synchronize()
        if i >= 3:
            times.append(s.elapsed_time(e))
    ms = sorted(times)[10]
    return ms, 4.0 * B * H * D * T * T / 2 / (ms * 1e-3) / 1e12


def bench_scan(B, T, E, N):
    """A PyTorch sequential selective scan (as mamba's selective_scan_ref: one step of
    h = exp(Δ A) h + Δ B x, y = C·h + D x per token), forward and forward + backward, in ms."""
    g = torch.Generator(device="cuda").manual_seed(0)
    def rnd(*shape):
        return torch.randn(*shape, device="cuda", generator=g)
    x, dt = rnd(B, T, E), rnd(B, T, E) - 1.5
    Bm, Cm = rnd(B, T, N), rnd(B, T, N)
    A_log = torch.log(torch.arange(1, N + 1, device="cuda", dtype=torch.float32)).repeat(E, 1)
    D, dt_bias = rnd(E), rnd(E) * 0.5
    params = [t.requires_grad_() for t in (x, dt, Bm, Cm, A_log, D, dt_bias)]

    def scan():
        delta = F.softplus(dt + dt_bias)                       # (B, T, E)
        A = -torch.exp(A_log)                                  # (E, N)
        h = torch.zeros(B, E, N, device="cuda")
        ys = []
        for t in range(T):
            dA = torch.exp(delta[:, t, :, None] * A)           # (B, E, N)
            h = dA * h + delta[:, t, :, None] * Bm[:, t, None, :] * x[:, t, :, None]
            ys.append((h * Cm[:, t, None, :]).sum(-1))
        return torch.stack(ys, 1) + D * x

    def timed(fn, reps=3):
        fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) / reps * 1e3

    with torch.no_grad():
        fwd = timed(scan)
    def fwd_bwd():
        scan().square().sum().backward()
        for t in params:
            t.grad = None
    return fwd, timed(fwd_bwd)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ours", required=True)
    p.add_argument("--attn", required=True)
    p.add_argument("--kernels", type=int, default=1, help="also time the attention and scan kernels")
    for k, d in (("vocab", 256), ("dim", 256), ("seq", 512), ("batch", 8), ("layers", 4)):
        p.add_argument("--" + k, type=int, default=d)
    a = p.parse_args()
    ours = {}
    for line in open(a.ours):
        line = line.strip()
        if line.startswith("{"):
            r = json.loads(line)
            ours[r["config"]] = r
    peers = {}
    for n in ("llama", "mamba", "mixtral"):
        try:
            peers[n] = bench_model(n, a)
        except Exception as err:  # one model failing leaves the others' figures
            print(f"peer {n} failed: {type(err).__name__}: {err}")
            torch.cuda.empty_cache()
    attn, scans = [], []  # (T, H, D, ours ms, ours TFLOP/s); (B, T, E, N, ours fwd ms, ours fwd+bwd ms)
    for line in open(a.attn):
        f = line.split()
        if len(f) == 7 and re.fullmatch(r"\d+", f[0]):
            attn.append((int(f[0]), int(f[1]), int(f[2]), float(f[4]), float(f[5])))
        if len(f) == 7 and f[0] == "scan":
            scans.append((int(f[1]), int(f[2]), int(f[3]), int(f[4]), float(f[5]), float(f[6])))
    print()
    print(f"torch {torch.__version__}, transformers {tf.__version__}, {torch.cuda.get_device_name()}, float32, "
          f"TF32 off; vocab {a.vocab}, dim {a.dim}, {a.layers} layers, seq {a.seq}, batch {a.batch}")
    print(f"{'':10} {'train tok/s ours':>17} {'pytorch':>10} {'ratio':>7}   {'step us/tok ours':>17} "
          f"{'generate':>10} {'ratio':>7}")
    for n in ("llama", "mamba", "mixtral"):
        o, q = ours.get(n), peers.get(n)
        if not o or not q:
            print(f"{n:10} ({'postformer' if not o else 'the peer'} did not run)")
            continue
        print(f"{n:10} {o['train_tokens_per_s']:17.0f} {q['train_tokens_per_s']:10.0f} "
              f"{o['train_tokens_per_s'] / q['train_tokens_per_s']:6.2f}x   {o['step_us_per_token']:17.1f} "
              f"{q['step_us_per_token']:10.1f} {q['step_us_per_token'] / o['step_us_per_token']:6.2f}x")
    if not a.kernels:
        return
    print(f"\nattention forward, causal, float32, batch 4: TFLOP/s (ms)")
    print(f"{'T':>6} {'H':>3} {'D':>4} {'ours':>14} {'torch SDPA':>16} {'ratio':>7}")
    for T, H, D, oms, otf in attn:
        ms, tfl = bench_sdpa(T, H, D)
        print(f"{T:6} {H:3} {D:4} {otf:7.2f} ({oms:.3f}) {tfl:8.2f} ({ms:.3f}) {otf / tfl:6.2f}x")
    if scans:
        print(f"\nselective scan (Mamba, float32), ours against a PyTorch sequential scan: ms")
        print(f"{'B':>3} {'T':>5} {'E':>5} {'N':>3} {'fwd ours':>9} {'torch':>9} {'ratio':>7} "
              f"{'fwd+bwd ours':>13} {'torch':>9} {'ratio':>7}")
        for B, T, E, N, of, ob in scans:
            tf_, tb = bench_scan(B, T, E, N)
            print(f"{B:3} {T:5} {E:5} {N:3} {of:9.3f} {tf_:9.2f} {tf_ / of:6.0f}x {ob:13.3f} {tb:9.2f} {tb / ob:6.0f}x")


if __name__ == "__main__":
    main()
