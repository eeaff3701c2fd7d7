#!/usr/bin/python3
"""Seeds for the safetensors fuzz target: small valid files of each dtype and shape kind, and a few
near misses. Run from the repository root: python3 tests/fuzz/make_corpus.py"""
import json
import os
import struct

OUT = os.path.join(os.path.dirname(__file__), "corpus")
SIZES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I32": 4, "U8": 1, "BOOL": 1, "I64": 8}


def file(tensors, meta=None, pad=True, header_override=None):
    header, data, at = {}, b"", 0
    if meta is not None:
        header["__metadata__"] = meta
    for name, dtype, shape in tensors:
        n = 1
        for d in shape:
            n *= d
        nbytes = n * SIZES[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [at, at + nbytes]}
        data += bytes((i * 37 + 11) % 256 for i in range(nbytes))
        at += nbytes
    h = header_override if header_override is not None else json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


seeds = {
    "empty": file([]),
    "f32": file([("w", "F32", [2, 3])], {"format": "pt"}),
    "mixed": file([("a", "F16", [4]), ("b", "BF16", [2, 2]), ("c", "F64", [1]), ("d", "I32", [3]),
                   ("e", "U8", [5]), ("f", "BOOL", [0]), ("g", "I64", [])]),
    "model": file([("embed.weight", "F32", [4, 2]), ("layers.0.mixer.A_log", "F32", [2, 2]),
                   ("norm.weight", "F32", [2])], {"format": "postformer", "postformer.model": "{\"vocab\":4}"}),
    "unpadded": file([("x", "F32", [1])], pad=False),
    "gap": file([], header_override=b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}') + b"\0" * 8,
    "dup": file([], header_override=b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                                    b'"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}') + b"\0" * 8,
}
os.makedirs(OUT, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(OUT, name + ".safetensors"), "wb") as f:
        f.write(data)
print(len(seeds), "seeds in", OUT)
