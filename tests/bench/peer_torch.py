#!/usr/bin/python3
"""The benchmark's peer: the same model as tests/bench/bench.c, in PyTorch eager on the CPU.

Embedding -> [RMSNorm -> attention (RoPE, causal, 4 heads, no biases) | RMSNorm -> SwiGLU MLP]
residual blocks -> RMSNorm -> untied head; AdamW (0.9, 0.95, eps 1e-8, no decay), clip 1.0.
Stepping keeps a KV cache and feeds one token at a time under no_grad. Prints one JSON line.
Run with Debian's /usr/bin/python3 (torch 1.13: no scaled_dot_product_attention, so attention is
written out, as eager code in that version is).
"""
import argparse, json, math, os, time
import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope(x, pos, theta=10000.0):
    # x (B, H, T, D), pairs (i, i + D/2)
    d = x.shape[-1]
    inv = theta ** (-torch.arange(0, d // 2, dtype=torch.float32) * 2 / d)
    ang = pos[:, None].float() * inv[None, :]
    cos, sin = ang.cos(), ang.sin()
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Attention(nn.Module):
    def __init__(self, dim, heads=4):
        super().__init__()
        self.h, self.d = heads, dim // heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.o_proj = nn.Linear(dim, dim, bias=False)
        self.cache = None

    def split(self, x):
        B, T, _ = x.shape
        return x.view(B, T, self.h, self.d).transpose(1, 2)

    def forward(self, x):
        B, T, C = x.shape
        pos = torch.arange(T)
        q, k, v = self.split(self.q_proj(x)), self.split(self.k_proj(x)), self.split(self.v_proj(x))
        q, k = rope(q, pos), rope(k, pos)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(self.d)
        s = s.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
        y = s.softmax(-1) @ v
        return self.o_proj(y.transpose(1, 2).reshape(B, T, C))

    def step(self, x):  # x (1, 1, C)
        t = 0 if self.cache is None else self.cache[0].shape[2]
        pos = torch.tensor([t])
        q, k, v = self.split(self.q_proj(x)), self.split(self.k_proj(x)), self.split(self.v_proj(x))
        q, k = rope(q, pos), rope(k, pos)
        if self.cache is not None:
            k = torch.cat([self.cache[0], k], 2)
            v = torch.cat([self.cache[1], v], 2)
        self.cache = (k, v)
        y = ((q @ k.transpose(-1, -2)) / math.sqrt(self.d)).softmax(-1) @ v
        return self.o_proj(y.transpose(1, 2).reshape(1, 1, -1))


class MLP(nn.Module):
    def __init__(self, dim):
        super().__init__()
        hidden = (8 * dim // 3 + 7) // 8 * 8
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))

    step = forward


class Model(nn.Module):
    def __init__(self, vocab, dim, layers):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.norms = nn.ModuleList(RMSNorm(dim) for _ in layers)
        self.layers = nn.ModuleList(Attention(dim) if k == "attention" else MLP(dim) for k in layers)
        self.norm = RMSNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)

    def forward(self, tokens):
        x = self.embed(tokens)
        for n, l in zip(self.norms, self.layers):
            x = x + l(n(x))
        return self.head(self.norm(x))

    def step(self, token):
        x = self.embed(token.view(1, 1))
        for n, l in zip(self.norms, self.layers):
            x = x + l.step(n(x))
        return self.head(self.norm(x))

    def reset(self):
        for l in self.layers:
            if isinstance(l, Attention):
                l.cache = None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", default="attention,mlp,attention,mlp")
    for k, v in dict(vocab=256, dim=128, seq=256, batch=16, steps=10, gen=256).items():
        ap.add_argument("--" + k, type=int, default=v)
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(1)
    m = Model(a.vocab, a.dim, a.layers.split(","))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    g = torch.Generator().manual_seed(7)
    inp = torch.randint(0, a.vocab, (a.batch, a.seq), generator=g)
    tgt = torch.randint(0, a.vocab, (a.batch, a.seq), generator=g)
    for s in range(a.steps + 2):
        if s == 2:
            t0 = time.perf_counter()
        loss = F.cross_entropy(m(inp).view(-1, a.vocab), tgt.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
    train_s = time.perf_counter() - t0
    with torch.no_grad():
        m.reset()
        for i in range(8):
            m.step(inp.view(-1)[i])
        m.reset()
        t1 = time.perf_counter()
        flat = inp.view(-1)
        for i in range(a.gen):
            m.step(flat[i % flat.numel()])
        step_s = time.perf_counter() - t1
    print(json.dumps(dict(impl="pytorch " + torch.__version__, device="cpu", threads=torch.get_num_threads(),
                          layers=a.layers, vocab=a.vocab, dim=a.dim, seq=a.seq, batch=a.batch,
                          params=sum(p.numel() for p in m.parameters()),
                          train_tokens_per_s=round(a.steps * a.batch * a.seq / train_s, 1),
                          step_us_per_token=round(step_s / a.gen * 1e6, 2), final_loss=round(loss.item(), 4))))


if __name__ == "__main__":
    main()
