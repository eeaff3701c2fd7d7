#!/usr/bin/env python3
"""Reference values for the mamba2 layer (tests/c/test_mamba2.c reads the output).

The Mamba-2 block written the way the public reference writes it (mamba_ssm/modules/mamba2_simple.py
without the fused kernels: in_proj -> split [z, xBC, dt] -> depthwise causal Conv1d -> SiLU -> split
[x, B, C] -> softplus(dt + dt_bias), A = -exp(A_log) -> scan -> RMSNormGated(norm_before_gate=False)
-> out_proj), with the scan done by ssd_minimal_discrete from mamba_ssm/modules/ssd_minimal.py (the
chunked algorithm in einsums, segsum and all), and the gradients by autograd. Everything in float64.

    /usr/bin/python3 tests/ref/mamba2_block.py > tests/ref/mamba2_block.txt

Output: a header line "dim T B head_dim state conv expand", then one block per tensor:
"name numel" followed by its values (one per line, row-major), in this order: the 8 parameters in the
layer's order, the input u (B, T, dim), the loss weights R (B, T, dim), the output (B, T, dim), the
input gradient, then the gradient of every parameter, named "grad.<name>". Loss: sum(out * R)."""
import torch
import torch.nn.functional as F

torch.manual_seed(0)
dtype = torch.float64

dim, T, Bn, headdim, d_state, d_conv, expand, block_len = 16, 12, 2, 8, 8, 4, 2, 4
d_inner = expand * dim
nheads = d_inner // headdim
conv_dim = d_inner + 2 * d_state
d_in_proj = 2 * d_inner + 2 * d_state + nheads


def segsum(x):
    """Stable segment sum (ssd_minimal.py): out[..., i, j] = sum_{j < k <= i} x[..., k], -inf above."""
    t = x.size(-1)
    x = x[..., None].expand(*x.shape, t)
    mask = torch.tril(torch.ones(t, t, dtype=torch.bool), diagonal=-1)
    x = x.masked_fill(~mask, 0)
    x_segsum = torch.cumsum(x, dim=-2)
    mask = torch.tril(torch.ones(t, t, dtype=torch.bool), diagonal=0)
    return x_segsum.masked_fill(~mask, -torch.inf)


def ssd_minimal_discrete(X, A, B, C, block_len):
    """ssd_minimal.py: X (b, l, h, p), A (b, l, h), B and C (b, l, h, n)."""
    b, l, h, p = X.shape
    c = l // block_len
    X, A, B, C = [x.reshape(b, c, block_len, *x.shape[2:]) for x in (X, A, B, C)]
    A = A.permute(0, 3, 1, 2)                         # b h c l
    A_cumsum = torch.cumsum(A, dim=-1)
    L = torch.exp(segsum(A))
    Y_diag = torch.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", C, B, L, X)
    decay_states = torch.exp(A_cumsum[:, :, :, -1:] - A_cumsum)
    states = torch.einsum("bclhn,bhcl,bclhp->bchpn", B, decay_states, X)
    initial_states = torch.zeros_like(states[:, :1])
    states = torch.cat([initial_states, states], dim=1)
    decay_chunk = torch.exp(segsum(F.pad(A_cumsum[:, :, :, -1], (1, 0))))
    new_states = torch.einsum("bhzc,bchpn->bzhpn", decay_chunk, states)
    states = new_states[:, :-1]
    state_decay_out = torch.exp(A_cumsum)
    Y_off = torch.einsum("bclhn,bchpn,bhcl->bclhp", C, states, state_decay_out)
    return (Y_diag + Y_off).reshape(b, l, h, p)


# parameters, drawn so that every path matters (Δ of order 0.1..1, A in [1, 16])
params = {
    "in_proj.weight": torch.randn(d_in_proj, dim, dtype=dtype) / dim ** 0.5,
    "conv1d.weight": torch.randn(conv_dim, 1, d_conv, dtype=dtype) / d_conv ** 0.5,
    "conv1d.bias": torch.randn(conv_dim, dtype=dtype) * 0.2,
    "dt_bias": torch.rand(nheads, dtype=dtype) * 1.5 - 1.5,
    "A_log": torch.log(1 + 15 * torch.rand(nheads, dtype=dtype)),
    "D": torch.rand(nheads, dtype=dtype) + 0.5,
    "norm.weight": torch.rand(d_inner, dtype=dtype) + 0.5,
    "out_proj.weight": torch.randn(dim, d_inner, dtype=dtype) / d_inner ** 0.5,
}
for p in params.values():
    p.requires_grad_(True)
u = torch.randn(Bn, T, dim, dtype=dtype, requires_grad=True)
R = torch.randn(Bn, T, dim, dtype=dtype)

# the block (mamba2_simple.py's forward, unfused)
zxbcdt = F.linear(u, params["in_proj.weight"])
A = -torch.exp(params["A_log"])
z, xBC, dt = torch.split(zxbcdt, [d_inner, conv_dim, nheads], dim=-1)
dt = F.softplus(dt + params["dt_bias"])
xBC = F.conv1d(xBC.transpose(1, 2), params["conv1d.weight"], params["conv1d.bias"],
               padding=d_conv - 1, groups=conv_dim)[..., :T].transpose(1, 2)
xBC = F.silu(xBC)
x, B, C = torch.split(xBC, [d_inner, d_state, d_state], dim=-1)
x = x.reshape(Bn, T, nheads, headdim)
Bh = B[:, :, None, :].expand(Bn, T, nheads, d_state)    # one group shared by all heads
Ch = C[:, :, None, :].expand(Bn, T, nheads, d_state)
y = ssd_minimal_discrete(x * dt[..., None], A * dt, Bh, Ch, block_len)
y = y + x * params["D"][:, None]
y = y.reshape(Bn, T, d_inner)
g = y * F.silu(z)                                            # RMSNormGated, norm_before_gate=False
g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + 1e-5) * params["norm.weight"]
out = F.linear(g, params["out_proj.weight"])
(out * R).sum().backward()


def dump(name, t):
    v = t.detach().reshape(-1)
    print(name, v.numel())
    print("\n".join("%.9g" % x for x in v.tolist()))


print(dim, T, Bn, headdim, d_state, d_conv, expand)
for name, p in params.items():
    dump(name, p)
dump("u", u)
dump("R", R)
dump("out", out)
dump("grad.u", u.grad)
for name, p in params.items():
    dump("grad." + name, p.grad)
