"""Reference values for tests/c/test_retention.c: RetNet multi-scale retention written directly in
PyTorch (float64, autograd for the gradients), the paper's parallel form with torchscale's rotation
and parameter layout, and nn.GroupNorm(heads, V) with affine weight and bias.

    /usr/bin/python3 tests/ref/retention_ref.py > tests/ref/retention_ref.txt

Output: for each tensor a line "name numel" and a line of its values. Parameters come in the
layer's registration order (q_proj, k_proj, v_proj, g_proj, out_proj, group_norm.weight, .bias),
each stored (out, in) like torch.nn.Linear. The loss is sum(out * dout). It also prints to stderr
how far torchscale's stabilised parallel form (D divided by sqrt of its row sums, then each row by
max(|row sum|, 1)) lands from the paper's form through the same GroupNorm."""
import math
import sys

import torch

torch.manual_seed(0)
dt = torch.float64
B, T, C, H, VF = 2, 12, 16, 2, 2
V, dk = VF * C, C // H
dv = V // H
EPS = 1e-6


def xavier(out_f, in_f, gain):
    bound = gain * math.sqrt(6.0 / (in_f + out_f))
    return (torch.rand(out_f, in_f, dtype=dt) * 2 - 1) * bound


params = {
    "q_proj.weight": xavier(C, C, 2 ** -2.5),
    "k_proj.weight": xavier(C, C, 2 ** -2.5),
    "v_proj.weight": xavier(V, C, 2 ** -2.5),
    "g_proj.weight": xavier(V, C, 2 ** -2.5),
    "out_proj.weight": xavier(C, V, 1.0),
    "group_norm.weight": 1 + 0.1 * torch.randn(V, dtype=dt),
    "group_norm.bias": 0.1 * torch.randn(V, dtype=dt),
}
x = torch.randn(B, T, C, dtype=dt)
dout = torch.randn(B, T, C, dtype=dt)
for p in params.values():
    p.requires_grad_(True)
x.requires_grad_(True)

gamma = 1 - 2.0 ** (-5 - torch.arange(H, dtype=dt))
theta = 1.0 / (10000 ** torch.linspace(0, 1, dk // 2, dtype=dt))
theta = theta.repeat_interleave(2)                       # (dk): pairs (2i, 2i+1) share an angle
pos = torch.arange(T, dtype=dt)
sin, cos = torch.sin(pos[:, None] * theta), torch.cos(pos[:, None] * theta)


def rotate(u):                                           # u (B, H, T, dk)
    pair = torch.stack((-u[..., 1::2], u[..., 0::2]), dim=-1).flatten(-2)
    return u * cos + pair * sin


def layer(stabilised=False):
    q = x @ params["q_proj.weight"].T
    k = (x @ params["k_proj.weight"].T) * dk ** -0.5
    v = x @ params["v_proj.weight"].T
    g = x @ params["g_proj.weight"].T
    q = rotate(q.view(B, T, H, dk).transpose(1, 2))
    k = rotate(k.view(B, T, H, dk).transpose(1, 2))
    v = v.view(B, T, H, dv).transpose(1, 2)
    n = torch.arange(T)
    D = gamma[:, None, None] ** (n[:, None] - n[None, :]).clamp(min=0).to(dt)
    D = D * (n[:, None] >= n[None, :]).to(dt)           # (H, T, T)
    if stabilised:
        D = D / D.sum(-1, keepdim=True).sqrt()
    A = (q @ k.transpose(-1, -2)) * D
    if stabilised:
        A = A / A.detach().sum(-1, keepdim=True).abs().clamp(min=1)
    o = (A @ v).transpose(1, 2).reshape(B * T, V)
    y = torch.nn.functional.group_norm(o, H, params["group_norm.weight"], params["group_norm.bias"], EPS)
    h = torch.nn.functional.silu(g.reshape(B * T, V)) * y
    return (h @ params["out_proj.weight"].T).view(B, T, C)


out = layer()
(out * dout).sum().backward()
with torch.no_grad():
    st = layer(stabilised=True)
    print("torchscale-stabilised vs paper form: max |diff| / max |out| = %.3e"
          % ((st - out).abs().max() / out.abs().max()).item(), file=sys.stderr)


def emit(name, t):
    t = t.detach().reshape(-1)
    print(name, t.numel())
    print(" ".join("%.9g" % v for v in t.tolist()))


print("dims", 5)
print(B, T, C, H, VF)
for name, p in params.items():
    emit(name, p)
emit("x", x)
emit("dout", dout)
emit("out", out)
emit("din", x.grad)
for name, p in params.items():
    emit("grad." + name, p.grad)
