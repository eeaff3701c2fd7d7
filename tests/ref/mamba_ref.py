#!/usr/bin/python3
"""Reference values for the mamba layer, from a plain PyTorch Mamba block.

Writes tests/ref/mamba_ref.bin, read by tests/c/test_mamba.c: the parameters (under the names and
shapes of mamba_simple.py of state-spaces/mamba), an input, the output, and, for the loss
L = sum(out * dout), the gradients of every parameter and of the input (torch autograd).

The forward follows mamba_simple.py's slow path and selective_scan_ref of mamba_ssm: in_proj ->
(x, z); causal depthwise conv1d (torch's F.conv1d, padding K-1, first T outputs); SiLU; x_proj ->
(dt, B, C); dt_proj; softplus(dt + bias); A = -exp(A_log); a sequential scan; + D x; * SiLU(z);
out_proj. It is computed in float64 from float32 parameters, so it is the exact value of the
float32 inputs up to float64 rounding.

Run from the repository root with Debian's python3-torch:  /usr/bin/python3 tests/ref/mamba_ref.py
"""
import math
import struct
import sys

import torch
import torch.nn.functional as F

C, EXPAND, N, K, B, T = 16, 2, 8, 4, 2, 24
E = EXPAND * C
R = math.ceil(C / 16)
DT_MIN, DT_MAX = 0.001, 0.1


def make_params(gen):
    """The reference initialisation, then perturbed so that no gradient is trivially special."""
    def uniform(shape, bound):
        return (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound

    p = {}
    p["in_proj.weight"] = uniform((2 * E, C), C ** -0.5)
    p["conv1d.weight"] = uniform((E, 1, K), K ** -0.5)
    p["conv1d.bias"] = uniform((E,), K ** -0.5)
    p["x_proj.weight"] = uniform((R + 2 * N, E), E ** -0.5)
    p["dt_proj.weight"] = uniform((E, R), R ** -0.5)
    dt = torch.exp(torch.rand(E, generator=gen, dtype=torch.float64)
                   * (math.log(DT_MAX) - math.log(DT_MIN)) + math.log(DT_MIN)).clamp(min=1e-4)
    p["dt_proj.bias"] = dt + torch.log(-torch.expm1(-dt))       # inverse softplus
    p["A_log"] = torch.log(torch.arange(1, N + 1, dtype=torch.float64)).repeat(E, 1) \
        + 0.1 * torch.randn((E, N), generator=gen, dtype=torch.float64)
    p["D"] = 1 + 0.5 * torch.randn(E, generator=gen, dtype=torch.float64)
    p["out_proj.weight"] = uniform((C, E), E ** -0.5)
    # the file holds float32: round here so that torch computes with exactly those values
    return {k: v.float().double() for k, v in p.items()}


def mamba_forward(p, u):
    """u (B, T, C) -> (B, T, C)"""
    Bsz, L, _ = u.shape
    xz = u @ p["in_proj.weight"].t()
    x, z = xz[..., :E], xz[..., E:]
    x = F.conv1d(x.transpose(1, 2), p["conv1d.weight"], p["conv1d.bias"], padding=K - 1, groups=E)
    x = F.silu(x[..., :L]).transpose(1, 2)                         # (B, T, E)
    x_dbl = x @ p["x_proj.weight"].t()
    dt, Bm, Cm = torch.split(x_dbl, [R, N, N], dim=-1)
    delta = F.softplus(dt @ p["dt_proj.weight"].t() + p["dt_proj.bias"])   # (B, T, E)
    A = -torch.exp(p["A_log"])                                     # (E, N)
    h = torch.zeros(Bsz, E, N, dtype=u.dtype)
    ys = []
    for t in range(L):
        dA = torch.exp(delta[:, t, :, None] * A)
        h = dA * h + delta[:, t, :, None] * Bm[:, t, None, :] * x[:, t, :, None]
        ys.append((h * Cm[:, t, None, :]).sum(-1))
    y = torch.stack(ys, dim=1) + p["D"] * x
    y = y * F.silu(z)
    return y @ p["out_proj.weight"].t()


def record(f, name, t):
    data = t.detach().to(torch.float32).contiguous()
    nb = name.encode()
    f.write(struct.pack("<i", len(nb)) + nb)
    f.write(struct.pack("<i", data.dim()) + struct.pack("<%di" % data.dim(), *data.shape))
    f.write(data.numpy().astype("<f4").tobytes())


def main(path):
    gen = torch.Generator().manual_seed(20231201)
    p = make_params(gen)
    for v in p.values():
        v.requires_grad_(True)
    u = torch.randn((B, T, C), generator=gen, dtype=torch.float64).float().double().requires_grad_(True)
    dout = torch.randn((B, T, C), generator=gen, dtype=torch.float64).float().double()
    out = mamba_forward(p, u)
    (out * dout).sum().backward()

    records = [("config", torch.tensor([C, E, N, K, R, B, T], dtype=torch.float64))]
    records += list(p.items())
    records += [("input", u), ("dout", dout), ("output", out), ("grad.input", u.grad)]
    records += [("grad." + k, v.grad) for k, v in p.items()]
    with open(path, "wb") as f:
        f.write(b"PFRF" + struct.pack("<i", len(records)))
        for name, t in records:
            record(f, name, t)
    print("wrote %s: %d records, |out| max %.4f" % (path, len(records), out.abs().max().item()))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/ref/mamba_ref.bin")
