#!/usr/bin/env python3
"""Reference fixtures for pf.load_hf and pf.tokenizer, made with the transformers and tokenizers
libraries (run where they are installed: the GPU machine; it runs on the CPU there).

    python3 tests/ref/make_hf_fixtures.py OUTDIR [NAME ...]

writes OUTDIR/hf/<arch>/ for arch in llama, mixtral (sharded), mamba, mamba2, jamba: a tiny randomly
initialised model saved with save_pretrained (config.json, model.safetensors or shards with
model.safetensors.index.json) and expected.lua (a Lua table: the token sequence, the float32 logits
of a forward over it, the greedy continuation of its first PROMPT tokens computed by repeated full
forwards, and the router logits where the model has a router), and OUTDIR/hf/tokenizer/: a
byte-level BPE tokenizer.json trained here on a text this script makes, and expected.lua (for each
test string: its bytes, the tokenizers library's pre-tokenized pieces, ids and decode).

Norm weights are perturbed away from 1 (1 + 0.1 N(0,1)) so that a norm loaded into the wrong slot
shows (Jamba's dt_layernorm, b_layernorm and c_layernorm inside its Mamba layers too). Every
architecture is made under its own try: one that this transformers version lacks is reported in
OUTDIR/hf/log.txt and skipped.

NAMEs (llama, mixtral, mamba, mamba2, jamba, tokenizer) make only those, leaving the other
directories under OUTDIR/hf/ as they are, and append to log.txt instead of rewriting it:

    python3 tests/ref/make_hf_fixtures.py tests/fixtures jamba

Jamba: four decoder layers, mamba+mlp, mamba+moe, attention+mlp, mamba+moe (attn_layer_period 4,
offset 2; expert_layer_period 2, offset 1), use_mamba_kernels=False (the reference path in torch).
"""
import json
import os
import random
import sys
import traceback

import torch

NAMES = ("llama", "mixtral", "mamba", "mamba2", "jamba", "tokenizer")
OUT = sys.argv[1] if len(sys.argv) > 1 else "out"
WANT = sys.argv[2:] or list(NAMES)
for _name in WANT:
    if _name not in NAMES:
        sys.exit("make_hf_fixtures.py: unknown name %r (known: %s)" % (_name, ", ".join(NAMES)))
ROOT = os.path.join(OUT, "hf")
os.makedirs(ROOT, exist_ok=True)
LOG = open(os.path.join(ROOT, "log.txt"), "a" if sys.argv[2:] else "w")
VOCAB = 128
TOKENS = [1, 17, 42, 5, 99, 3, 64, 127, 8, 23, 0, 77, 15, 31, 2, 90]
PROMPT = 6
NEW = 10


def log(*a):
    print(*a)
    print(*a, file=LOG)
    LOG.flush()


def lua_str(b):
    if isinstance(b, str):
        b = b.encode("utf-8")
    out = []
    for c in b:
        ch = chr(c)
        if 32 <= c < 127 and ch not in '"\\':
            out.append(ch)
        else:
            out.append("\\%03d" % c)
    return '"' + "".join(out) + '"'


def lua(v, indent=""):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (str, bytes)):
        return lua_str(v)
    if isinstance(v, (list, tuple)):
        if all(isinstance(x, (int, float)) for x in v):
            return "{" + ", ".join(lua(x) for x in v) + "}"
        return "{\n" + "".join(indent + "  " + lua(x, indent + "  ") + ",\n" for x in v) + indent + "}"
    if isinstance(v, dict):
        return "{\n" + "".join(indent + "  " + k + " = " + lua(x, indent + "  ") + ",\n"
                               for k, x in v.items()) + indent + "}"
    raise TypeError(type(v))


def write_expected(d, table):
    with open(os.path.join(d, "expected.lua"), "w") as f:
        f.write("-- made by tests/ref/make_hf_fixtures.py\nreturn " + lua(table) + "\n")


def perturb_norms(model):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight") and p.dim() == 1:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))


def logits_of(model, ids, **kw):
    with torch.no_grad():
        return model(torch.tensor([ids]), **kw)


def greedy(model, prompt, n):
    ids = list(prompt)
    for _ in range(n):
        out = logits_of(model, ids)
        ids.append(int(out.logits[0, -1].argmax()))
    return ids[len(prompt):]


def make(name, build, shard=None, router=False):
    d = os.path.join(ROOT, name)
    try:
        torch.manual_seed(0)
        model = build()
        model.eval()
        perturb_norms(model)
        if shard:
            model.save_pretrained(d, safe_serialization=True, max_shard_size=shard)
        else:
            model.save_pretrained(d, safe_serialization=True)
        gc = os.path.join(d, "generation_config.json")
        if os.path.exists(gc):
            os.remove(gc)
        kw = {"output_router_logits": True} if router else {}
        out = logits_of(model, TOKENS, **kw)
        table = {
            "arch": type(model).__name__,
            "tokens": TOKENS,
            "logits": [[float(x) for x in row] for row in out.logits[0]],
            "prompt": TOKENS[:PROMPT],
            "greedy": greedy(model, TOKENS[:PROMPT], NEW),
        }
        if router:
            rl = [r for r in out.router_logits if r is not None]
            table["router_logits"] = [[[float(x) for x in row] for row in r.reshape(len(TOKENS), -1)] for r in rl]
        write_expected(d, table)
        log("ok", name, type(model).__name__, sum(p.numel() for p in model.parameters()), "params",
            sorted(os.listdir(d)))
    except Exception:
        log("FAILED", name)
        log(traceback.format_exc())


def make_llama():
    from transformers import LlamaConfig, LlamaForCausalLM
    make("llama", lambda: LlamaForCausalLM(LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rms_norm_eps=1e-6, rope_theta=500.0, tie_word_embeddings=False, initializer_range=0.1,
        attn_implementation="eager")))


def make_mixtral():
    from transformers import MixtralConfig, MixtralForCausalLM
    make("mixtral", lambda: MixtralForCausalLM(MixtralConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
        max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=1e6, sliding_window=None,
        tie_word_embeddings=False, initializer_range=0.1, attn_implementation="eager")),
        shard="40KB", router=True)


def make_mamba():
    from transformers import MambaConfig, MambaForCausalLM
    make("mamba", lambda: MambaForCausalLM(MambaConfig(
        vocab_size=VOCAB, hidden_size=32, state_size=8, num_hidden_layers=2, expand=2,
        conv_kernel=4, time_step_rank="auto", use_bias=False, use_conv_bias=True,
        layer_norm_epsilon=1e-5, residual_in_fp32=True, tie_word_embeddings=True,
        use_mambapy=False)))


def make_mamba2():
    from transformers import Mamba2Config, Mamba2ForCausalLM
    make("mamba2", lambda: Mamba2ForCausalLM(Mamba2Config(
        vocab_size=VOCAB, hidden_size=32, state_size=16, num_hidden_layers=2, expand=2,
        head_dim=16, num_heads=4, n_groups=1, conv_kernel=4, chunk_size=8, use_bias=False,
        use_conv_bias=True, layer_norm_epsilon=1e-5, residual_in_fp32=True,
        tie_word_embeddings=False, rms_norm=True, norm_before_gate=False)))


def make_jamba():
    from transformers import JambaConfig, JambaForCausalLM
    make("jamba", lambda: JambaForCausalLM(JambaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, num_experts=4, num_experts_per_tok=2,
        expert_layer_period=2, expert_layer_offset=1, attn_layer_period=4, attn_layer_offset=2,
        use_mamba_kernels=False, mamba_d_state=8, mamba_d_conv=4, mamba_expand=2,
        mamba_dt_rank=4, mamba_conv_bias=True, mamba_proj_bias=False, rms_norm_eps=1e-6,
        tie_word_embeddings=False, initializer_range=0.1, attn_implementation="eager")),
        router=True)


MAKERS = {"llama": make_llama, "mixtral": make_mixtral, "mamba": make_mamba, "mamba2": make_mamba2,
          "jamba": make_jamba}


def main():
    import transformers
    log("torch", torch.__version__, "transformers", transformers.__version__, "making", " ".join(WANT))
    torch.set_num_threads(4)
    for name in WANT:
        try:
            if name == "tokenizer":
                make_tokenizer()
            else:
                MAKERS[name]()  # each seeds torch itself: the same model whichever others are made
        except Exception:
            log("FAILED", name, "import" if name != "tokenizer" else "", traceback.format_exc())


# ---- tokenizer --------------------------------------------------------------------------------

WORDS = ("the of and to in is was for that it with as on be at by this had not are but from or have "
         "an they which one you were all we her she there would their will when who him been has more "
         "if no out do so can what up said about other into than its time only could new them man some "
         "these then two first may any like now my such make over our even most me state after also "
         "made many did must before back see through way where get much go well your know should down "
         "work year because come people just say each those take day good how long Mr own too little "
         "use US very great still men here life both between old under last never place same another "
         "think house while high right might came off find states since used give against three "
         "himself look few general hand school part small American upon home during however").split()
UNICODE = ["café", "naïve", "Zürich", "façade", "São Paulo", "Ελληνικά", "Привет мир", "Ярослав",
           "日本語のテキスト", "中文字符", "한국어", "مرحبا بالعالم", "שלום", "हिन्दी", "ไทย",
           "emoji 😀 🎉 👍🏽", "👨‍👩‍👧", "e\u0301", "n\u0303o", "ﬁ ligature", "Ⅻ roman", "½ ¾ ²",
           "٣٤٥ arabic digits", "١٢", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "\u00a0nbsp\u00a0", "zero\u200bwidth", "tab\there",
           "ÅÄÖ åäö", "Ωμέγα", "ǅ titlecase", "ʰ modifier", "〇 ideographic zero", "￥ fullwidth ＡＢＣ"]
PUNCT = [".", ",", "!", "?", ";", ":", "...", "--", "(", ")", "[", "]", "{", "}", "\"", "'", "#", "@",
         "$", "%", "&", "*", "+", "=", "<", ">", "/", "\\", "|", "~", "^", "`", "_"]
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'LL", "'x"]
SPACES = [" ", "  ", "   ", "\t", "\n", "\n\n", " \n", "\r\n", "    ", "\u3000", "\u2003", "\u0085"]


def random_string(r):
    parts = []
    for _ in range(r.randint(1, 12)):
        k = r.random()
        if k < 0.35:
            w = r.choice(WORDS)
            parts.append(w.capitalize() if r.random() < 0.2 else w.upper() if r.random() < 0.05 else w)
        elif k < 0.5:
            parts.append(r.choice(UNICODE))
        elif k < 0.62:
            parts.append(r.choice(PUNCT) * r.randint(1, 3))
        elif k < 0.72:
            parts.append(str(r.randint(0, 10 ** r.randint(1, 9))))
        elif k < 0.8:
            parts.append(r.choice(CONTRACTIONS))
        elif k < 0.9:
            parts.append(r.choice(SPACES) * r.randint(1, 3))
        else:
            parts.append("<|endoftext|>" if r.random() < 0.3 else chr(r.randint(0x20, 0x2FFF)))
        if r.random() < 0.6:
            parts.append(" ")
    s = "".join(parts)
    if r.random() < 0.1:
        s = " " + s
    if r.random() < 0.1:
        s = s + r.choice(SPACES)
    return s


def corpus():
    r = random.Random(12345)
    lines = []
    for _ in range(3000):
        n = r.randint(3, 20)
        words = [r.choice(WORDS) for _ in range(n)]
        if r.random() < 0.3:
            words.insert(r.randrange(len(words)), r.choice(UNICODE))
        if r.random() < 0.2:
            words.append(str(r.randint(0, 100000)))
        if r.random() < 0.2:
            words[0] = words[0] + r.choice(CONTRACTIONS)
        lines.append(" ".join(words) + r.choice([".", "!", "?", ",", ""]))
    lines += ["def f(x):\n    return x * 2\n", "for (int i = 0; i < n; i++) {\n\tsum += a[i];\n}\n"] * 50
    return lines


def make_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    import tokenizers
    log("tokenizers", tokenizers.__version__)
    d = os.path.join(ROOT, "tokenizer")
    os.makedirs(d, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=800, min_frequency=2, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    path = os.path.join(d, "tokenizer.json")
    tok.save(path)
    tok = Tokenizer.from_file(path)
    r = random.Random(7)
    strings = [""," ", "  ", "hello world", "Hello World!", "it's", "IT'S", "don't you're we've I'm he'll she'd",
               "   leading", "trailing   ", "a  b   c", "\n\n\nx", "x\n\n", "line1\nline2\r\n", "tab\tsep",
               "1234567890", "3.14159", "$100.00", "<|endoftext|>", "a<|endoftext|>b", "x <|endoftext|> y",
               "😀", "👨‍👩‍👧", "e\u0301", "日本語", "Привет", "ǅ", "\u00a0", "\u3000x", "x\u2003 y"]
    strings += UNICODE + [w for w in WORDS[:20]]
    while len(strings) < 400:
        strings.append(random_string(r))
    cases = []
    for s in strings:
        enc = tok.encode(s)
        pieces = [p for p, _ in tok.pre_tokenizer.pre_tokenize_str(s)] if "<|endoftext|>" not in s else None
        case = {"text": s, "ids": list(enc.ids), "decoded": tok.decode(enc.ids, skip_special_tokens=False)}
        if pieces is not None:
            case["pieces"] = pieces
        cases.append(case)
    write_expected(d, {"vocab_size": tok.get_vocab_size(), "cases": cases})
    log("ok tokenizer", tok.get_vocab_size(), "tokens,", len(cases), "cases")


if __name__ == "__main__":
    main()
