#!/usr/bin/python3
"""The benchmark's peer: the same models as tests/bench/bench.c, in PyTorch eager on the CPU.

Embedding -> [RMSNorm -> layer] residual blocks -> RMSNorm -> untied head; AdamW (0.9, 0.95,
eps 1e-8, no decay), clip 1.0; the loss is the cross-entropy plus the layers' auxiliary losses
(MoE). Layers, each the same architecture, parameter shapes and init as ours (so the parameter
counts printed beside ours are equal):
  attention  RoPE, causal, 4 heads, no biases; written out (torch 1.13 has no SDPA); steps with a KV cache
  mlp        SwiGLU (gate_proj, up_proj, down_proj), hidden 8/3*dim rounded up to 8 unless given
  mamba      the Mamba block (in_proj, depthwise causal conv1d, x_proj, dt_proj, softplus, A_log, D,
             SiLU gate, out_proj); training runs the selective scan sequentially over time in Python
             (as mamba's selective_scan_ref); steps with the conv window and h
  retention  RetNet multi-scale retention, the parallel form (Q K^T .* D) V with the same rotation,
             GroupNorm(H, V) and swish gate; steps with the recurrent form S = gamma S + k^T v
  moe        a Mixtral-style sparse MoE block: router, softmax, top-k renormalised gates, a loop over
             the experts each taking the tokens routed to it (index_add_ back), SwiGLU experts, the
             balance loss aux * E * sum_i f_i P_i (f held constant) and the z-loss zloss * mean lse^2
Settings: torch.set_num_threads(os.cpu_count()); then (--one-thread 1, the default) the same training,
stepping and layer timing again with torch.set_num_threads(1), printed as the *_1thread fields. (Not set_flush_denormal: it gained nothing measurable
on the Mamba scan, and with 2 threads it makes torch 1.13's group_norm of one token take ~3 ms.)
Options as bench.c takes them: --layers "moe{experts=8,top_k=2},mlp{hidden=688}". Prints one JSON line.
Run with Debian's /usr/bin/python3 (torch 1.13).
"""
import argparse, json, math, os, re, time
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

    def reset(self):
        self.cache = None


def swiglu_hidden(dim):
    return (8 * dim // 3 + 7) // 8 * 8


class MLP(nn.Module):
    def __init__(self, dim, hidden=0):
        super().__init__()
        hidden = hidden or swiglu_hidden(dim)
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)
        for l in (self.gate_proj, self.up_proj, self.down_proj):
            nn.init.normal_(l.weight, std=0.02)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))

    step = forward

    def reset(self):
        pass


class Mamba(nn.Module):
    """mamba_simple.py's block without its fused kernels. Linear and Conv1d keep torch's default
    init (uniform +-1/sqrt(fan_in)), as ours; dt_proj.bias the inverse softplus of a log-uniform
    dt in [0.001, 0.1]; A_log = log(1..N) per channel; D = 1."""

    def __init__(self, dim, state=16, expand=2, conv=4, dt_rank=0, dt_min=0.001, dt_max=0.1):
        super().__init__()
        E, N, R = expand * dim, state, dt_rank or math.ceil(dim / 16)
        self.E, self.N, self.R, self.K = E, N, R, conv
        self.in_proj = nn.Linear(dim, 2 * E, bias=False)
        self.conv1d = nn.Conv1d(E, E, conv, groups=E, padding=conv - 1, bias=True)
        self.x_proj = nn.Linear(E, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, E, bias=True)
        dt = torch.exp(torch.rand(E) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=1e-4)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1))
        self.D = nn.Parameter(torch.ones(E))
        self.out_proj = nn.Linear(E, dim, bias=False)
        self.reset()

    def ssm_inputs(self, x):
        dt_low, Bm, Cm = self.x_proj(x).split([self.R, self.N, self.N], dim=-1)
        return F.softplus(self.dt_proj(dt_low)), Bm, Cm

    def forward(self, u):
        B, T, _ = u.shape
        x, z = self.in_proj(u).chunk(2, dim=-1)
        x = F.silu(self.conv1d(x.transpose(1, 2))[..., :T].transpose(1, 2))
        dt, Bm, Cm = self.ssm_inputs(x)
        A = -torch.exp(self.A_log)
        # the sequential scan (selective_scan_ref): h_t = exp(dt A) h_{t-1} + dt B_t x_t, y_t = C_t h_t
        dA = torch.exp(dt.unsqueeze(-1) * A)                              # (B, T, E, N)
        dBx = (dt * x).unsqueeze(-1) * Bm.unsqueeze(2)                    # (B, T, E, N)
        h = u.new_zeros(B, self.E, self.N)
        ys = []
        # unbind, not dA[:, t]: the backward of T indexings would zero-fill T full-size gradients
        for dA_t, dBx_t, C_t in zip(dA.unbind(1), dBx.unbind(1), Cm.unbind(1)):
            h = dA_t * h + dBx_t
            ys.append(torch.einsum("ben,bn->be", h, C_t))
        y = torch.stack(ys, dim=1) + x * self.D
        return self.out_proj(y * F.silu(z))

    def step(self, u):  # (1, 1, C)
        x, z = self.in_proj(u[:, 0]).chunk(2, dim=-1)                     # (1, E)
        self.conv_state = torch.cat([self.conv_state[:, :, 1:], x.unsqueeze(-1)], dim=-1)  # (1, E, K)
        x = F.silu((self.conv_state * self.conv1d.weight[:, 0]).sum(-1) + self.conv1d.bias)
        dt, Bm, Cm = self.ssm_inputs(x)
        A = -torch.exp(self.A_log)
        self.h = torch.exp(dt.unsqueeze(-1) * A) * self.h + (dt * x).unsqueeze(-1) * Bm.unsqueeze(1)
        y = torch.einsum("ben,bn->be", self.h, Cm) + self.D * x
        return self.out_proj(y * F.silu(z)).unsqueeze(1)

    def reset(self):
        self.conv_state = torch.zeros(1, self.E, self.K)
        self.h = torch.zeros(1, self.E, self.N)


def xpos_rotate(x, pos):
    # x (..., T, dk): pairs (2i, 2i+1) turn by pos * theta_i, theta_i = 10000^(-i/(dk/2-1)) (torchscale)
    P = x.shape[-1] // 2
    theta = 10000.0 ** -torch.linspace(0, 1, P)
    ang = pos[:, None].float() * theta[None, :]                          # (T, P)
    cos, sin = ang.cos(), ang.sin()
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack([a * cos - b * sin, b * cos + a * sin], dim=-1).flatten(-2)


class Retention(nn.Module):
    """Multi-scale retention as engine/layers/retention.c: gamma_h = 1 - 2^(-5-h), K scaled by dk^-0.5,
    the paper's equations with no extra rescaling; out = out_proj(swish(g) * GroupNorm_H(O))."""

    def __init__(self, dim, heads=4, value_factor=2, form=None, chunk=None):
        super().__init__()
        self.H, self.dk, self.V = heads, dim // heads, value_factor * dim
        self.dv = self.V // heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, self.V, bias=False)
        self.g_proj = nn.Linear(dim, self.V, bias=False)
        self.out_proj = nn.Linear(self.V, dim, bias=False)
        self.group_norm = nn.GroupNorm(heads, self.V, eps=1e-6)
        for l in (self.q_proj, self.k_proj, self.v_proj, self.g_proj):
            nn.init.xavier_uniform_(l.weight, gain=2 ** -2.5)
        nn.init.xavier_uniform_(self.out_proj.weight)
        self.register_buffer("gamma", 1 - 2.0 ** (-5 - torch.arange(heads, dtype=torch.float32)), persistent=False)
        self.reset()

    def qkv(self, x, pos):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.H, self.dk).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.H, self.dk).transpose(1, 2) * self.dk ** -0.5
        v = self.v_proj(x).view(B, T, self.H, self.dv).transpose(1, 2)
        return xpos_rotate(q, pos), xpos_rotate(k, pos), v

    def out(self, o, x):  # o (B, H, T, dv)
        B, _, T, _ = o.shape
        y = self.group_norm(o.transpose(1, 2).reshape(B * T, self.V)).view(B, T, self.V)
        return self.out_proj(F.silu(self.g_proj(x)) * y)

    def forward(self, x):
        T = x.shape[1]
        q, k, v = self.qkv(x, torch.arange(T))
        n = torch.arange(T)
        diff = (n[:, None] - n[None, :]).float()
        D = torch.where(diff >= 0, self.gamma[:, None, None] ** diff.clamp(min=0), torch.zeros(()))  # (H, T, T)
        return self.out((q @ k.transpose(-1, -2) * D) @ v, x)

    def step(self, x):  # (1, 1, C)
        q, k, v = self.qkv(x, torch.tensor([self.pos]))                   # (1, H, 1, d)
        self.S = self.gamma[:, None, None] * self.S + k[0].transpose(-1, -2) @ v[0]   # (H, dk, dv)
        self.pos += 1
        return self.out((q[0] @ self.S).unsqueeze(0), x)

    def reset(self):
        self.S = torch.zeros(self.H, self.dk, self.dv)
        self.pos = 0


class Expert(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        for l in (self.w1, self.w3, self.w2):
            nn.init.normal_(l.weight, std=0.02)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class MoE(nn.Module):
    """Mixtral's MixtralSparseMoeBlock (transformers), with ours' balance and z losses."""

    def __init__(self, dim, experts=8, top_k=2, hidden=0, aux=0.01, zloss=0.001):
        super().__init__()
        self.E, self.k, self.aux, self.zloss = experts, top_k, aux, zloss
        self.gate = nn.Linear(dim, experts, bias=False)
        nn.init.normal_(self.gate.weight, std=0.02)
        self.experts = nn.ModuleList(Expert(dim, hidden or swiglu_hidden(dim)) for _ in range(experts))
        self.aux_loss = None

    def forward(self, x):
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        N = x.shape[0]
        logits = self.gate(x)
        probs = logits.softmax(-1)
        w, idx = probs.topk(self.k, dim=-1)
        w = w / w.sum(-1, keepdim=True)
        out = torch.zeros_like(x)
        mask = F.one_hot(idx, self.E).permute(2, 1, 0)                   # (E, k, N)
        for e, expert in enumerate(self.experts):
            slot, tok = torch.where(mask[e])
            if tok.numel() == 0:
                continue
            out.index_add_(0, tok, expert(x[tok]) * w[tok, slot, None])
        if self.training:
            f = mask.sum((1, 2)).float() / (N * self.k)                   # held constant
            balance = self.E * (f * probs.mean(0)).sum()
            z = torch.logsumexp(logits, -1).pow(2).mean()
            self.aux_loss = self.aux * balance + self.zloss * z
        return out.view(shape)

    step = forward

    def reset(self):
        pass


KINDS = dict(attention=Attention, mlp=MLP, mamba=Mamba, retention=Retention, moe=MoE)


def parse_layers(spec):
    """'moe{experts=8,top_k=2},mlp' -> [(MoE, {'experts': 8, 'top_k': 2}), (MLP, {})]"""
    out = []
    for name, opts in re.findall(r"(\w+)(?:\{([^}]*)\})?,?", spec):
        kw = {}
        for kv in filter(None, (opts or "").split(",")):
            k, v = kv.split("=")
            try:
                kw[k] = float(v) if "." in v or "e" in v else int(v)
            except ValueError:
                kw[k] = v
        out.append((KINDS[name], kw))
    return out


class Model(nn.Module):
    def __init__(self, vocab, dim, layers):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.norms = nn.ModuleList(RMSNorm(dim) for _ in layers)
        self.layers = nn.ModuleList(kind(dim, **kw) for kind, kw in layers)
        self.norm = RMSNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)

    def forward(self, tokens):
        x = self.embed(tokens)
        for n, l in zip(self.norms, self.layers):
            x = x + l(n(x))
        return self.head(self.norm(x))

    def aux_loss(self):
        return sum(l.aux_loss for l in self.layers if getattr(l, "aux_loss", None) is not None)

    def step(self, token):
        x = self.embed(token.view(1, 1))
        for n, l in zip(self.norms, self.layers):
            x = x + l.step(n(x))
        return self.head(self.norm(x))

    def reset(self):
        for l in self.layers:
            l.reset()


def time_layer(layer, B, T, C, reps):
    """The first block's layer alone: forward + backward over (B, T, C) random inputs, as bench.c."""
    g = torch.Generator().manual_seed(11)
    x = (torch.rand(B, T, C, generator=g) * 2 - 1).requires_grad_()
    dy = (torch.rand(B, T, C, generator=g) * 2 - 1) * 1e-3
    layer.train()
    for i in range(reps + 1):
        if i == 1:
            t0 = time.perf_counter()
        y = layer(x)
        loss = (y * dy).sum()
        if getattr(layer, "aux_loss", None) is not None:
            loss = loss + layer.aux_loss
        loss.backward()
    return (time.perf_counter() - t0) / reps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", default="attention,mlp,attention,mlp")
    for k, v in dict(vocab=256, dim=128, seq=256, batch=16, steps=10, warmup=2, gen=256, layer_reps=0).items():
        ap.add_argument("--" + k.replace("_", "-"), type=int, default=v)
    ap.add_argument("--one-thread", type=int, default=1, help="also measure on one thread (default 1)")
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count())
    threads = torch.get_num_threads()
    torch.manual_seed(1)
    m = Model(a.vocab, a.dim, parse_layers(a.layers))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    g = torch.Generator().manual_seed(7)
    inp = torch.randint(0, a.vocab, (a.batch, a.seq), generator=g)
    tgt = torch.randint(0, a.vocab, (a.batch, a.seq), generator=g)
    def train(steps, warmup):
        m.train()
        for s in range(steps + warmup):
            if s == warmup:
                t0 = time.perf_counter()
            loss = F.cross_entropy(m(inp).view(-1, a.vocab), tgt.view(-1))
            total = loss + m.aux_loss()
            opt.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
            opt.step()
        return time.perf_counter() - t0, loss.item()

    def stepping():
        m.eval()
        with torch.no_grad():
            m.reset()
            for i in range(8):
                m.step(inp.view(-1)[i])
            m.reset()
            t1 = time.perf_counter()
            flat = inp.view(-1)
            for i in range(a.gen):
                m.step(flat[i % flat.numel()])
            return time.perf_counter() - t1

    train_s, loss = train(a.steps, a.warmup)
    step_s = stepping()
    layer_s = time_layer(m.layers[0], a.batch, a.seq, a.dim, a.layer_reps) if a.layer_reps > 0 else 0
    n = a.batch * a.seq
    one = {}
    if a.one_thread and torch.get_num_threads() > 1:
        # again on one thread: on a loaded machine every OpenMP region of torch's small ops waits for a
        # second core that is busy elsewhere (a 4096-element exp took 8 ms on 2 threads, 3 us on 1)
        torch.set_num_threads(1)
        train1_s, _ = train(a.steps, max(a.warmup, 1))
        one = dict(train_tokens_per_s_1thread=round(a.steps * n / train1_s, 1),
                   step_us_per_token_1thread=round(stepping() / a.gen * 1e6, 2))
        if a.layer_reps > 0:
            one["layer_us_per_token_1thread"] = round(time_layer(m.layers[0], a.batch, a.seq, a.dim, a.layer_reps) / n * 1e6, 3)
    print(json.dumps(dict(impl="pytorch " + torch.__version__, device="cpu", threads=threads,
                          layers=a.layers, vocab=a.vocab, dim=a.dim, seq=a.seq, batch=a.batch,
                          params=sum(p.numel() for p in m.parameters()),
                          train_tokens_per_s=round(a.steps * n / train_s, 1),
                          step_us_per_token=round(step_s / a.gen * 1e6, 2),
                          layer_us_per_token=round(layer_s / n * 1e6, 3), final_loss=round(loss, 4), **one)))


if __name__ == "__main__":
    main()
