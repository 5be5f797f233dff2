#!/usr/bin/python3
"""reference_llama.py - an independent numpy reference of Hugging Face LlamaForCausalLM
(and of the Qwen2ForCausalLM and MistralForCausalLM variants Cohort implements).

Used by tests/model_reference.test.sh to check cohort-tool's forward pass (and, through
finite differences, its gradient) against the Hugging Face definition. Nothing here is
shared with the C code: the safetensors reader/writer and the model are written from the
file format and from transformers' modeling_llama.py conventions:

  * RMSNorm in float32: x * rsqrt(mean(x^2) + eps) * w;
  * rotary embeddings with rotate_half (non-interleaved halves), inv_freq and angles in
    float32 as HF computes them;
  * grouped-query attention through repeat_kv (query head h reads kv head h // n_rep),
    scores scaled by head_dim^-0.5, causal mask, softmax in float32;
  * SwiGLU MLP down(silu(gate(x)) * up(x)); final norm; lm_head or the tied embedding;
  * families, as transformers' modeling_qwen2.py / modeling_mistral.py / modeling_llama.py
    define them: Qwen2 adds biases to q/k/v_proj (never o_proj); Llama's attention_bias adds
    them to q/k/v/o_proj; Mistral has none, and masks keys more than sliding_window back;
    head_dim from config.json when given (else hidden_size / num_attention_heads);
    rope_scaling {"rope_type": "llama3", ...} applied to inv_freq as
    _compute_llama3_parameters does (float32); any other rope_type is refused.

Only numpy is needed. Subcommands (all paths are checkpoint folders or JSON Lines files):

  logprobs DIR [--temperature T] [--float64] < seqs.jsonl > logprobs.jsonl
  mkrm SRC DST [--seed N]                     reward model (LlamaForSequenceClassification)
  rmscore DIR < seqs.jsonl > scores.jsonl     its score at the last token
  convert SRC DST --dtype F32|F16|BF16       copy with the weights rounded to dtype
  randomize SRC DST [--std S] [--seed N]     larger random weights (F32), norms ~ 1 +- 0.2,
                                              biases N(0, std)
  fillbias DIR [--std S] [--seed N]           replace every *.bias tensor with N(0, std)
                                              (in place, F32); fails if there is none
  compare A.jsonl B.jsonl [--tol X]           max |a - b| over logprobs; exit 1 if > tol
  makeseqs DIR N [--seed S]                   N random id sequences (lengths 2..max_pos)
  sftbatch SEQS.jsonl OUT.jsonl               grad batch lines (prompt_len 1, sft)
  gradcheck DIR BATCH.jsonl GRADS.safetensors [--tol X] [--per-tensor K]
          central finite differences of the token-mean SFT loss (float64) against the
          gradients cohort-tool wrote; exit 1 if any relative error exceeds tol
"""

import argparse
import json
import math
import os
import shutil
import struct
import sys

import numpy as np

# ---- safetensors ----------------------------------------------------------------------

DTYPE_SIZE = {"F32": 4, "F16": 2, "BF16": 2}


def read_safetensors(path):
    """Return {name: float32 ndarray} and the dtype of every tensor."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", blob[:8])
    if 8 + n > len(blob):
        raise ValueError(f"{path}: header length {n} exceeds the file")
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    data = blob[8 + n:]
    tensors, dtypes = {}, {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt, shape = info["dtype"], [int(s) for s in info["shape"]]
        begin, end = (int(x) for x in info["data_offsets"])
        count = int(np.prod(shape)) if shape else 1
        if dt not in DTYPE_SIZE:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {dt}")
        if end - begin != count * DTYPE_SIZE[dt] or end > len(data):
            raise ValueError(f"{path}: tensor {name} has bad data_offsets")
        raw = data[begin:end]
        if dt == "F32":
            arr = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        elif dt == "F16":
            arr = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        else:  # BF16: the high 16 bits of a float32
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = bits.view(np.float32)
        tensors[name] = arr.reshape(shape)
        dtypes[name] = dt
    return tensors, dtypes


def to_bf16_bits(x):
    """float32 -> bfloat16 bits, round to nearest even (finite inputs)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def write_safetensors(path, tensors, dtype="F32"):
    """Write {name: array} with every tensor stored as dtype (F32, F16 or BF16)."""
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        a = np.asarray(tensors[name], dtype=np.float32)
        if dtype == "F32":
            raw = a.astype("<f4").tobytes()
        elif dtype == "F16":
            raw = a.astype("<f2").tobytes()
        elif dtype == "BF16":
            raw = to_bf16_bits(a).astype("<u2").tobytes()
        else:
            raise ValueError(f"unknown dtype {dtype}")
        header[name] = {"dtype": dtype, "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    header["__metadata__"] = {"format": "pt"}
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((8 - len(hjson) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for c in chunks:
            f.write(c)


# ---- the model ------------------------------------------------------------------------

class Llama:
    """LlamaForCausalLM forward in numpy, float32 like HF (or float64 for gradient checks)."""

    def __init__(self, folder, dtype=np.float32):
        with open(os.path.join(folder, "config.json")) as f:
            cfg = json.load(f)
        self.V = int(cfg["vocab_size"])
        self.D = int(cfg["hidden_size"])
        self.F = int(cfg["intermediate_size"])
        self.L = int(cfg["num_hidden_layers"])
        self.H = int(cfg["num_attention_heads"])
        self.KVH = int(cfg.get("num_key_value_heads") or self.H)
        self.eps = float(cfg.get("rms_norm_eps", 1e-6))
        self.theta = float(cfg.get("rope_theta", 10000.0))
        self.max_pos = int(cfg["max_position_embeddings"])
        self.tied = bool(cfg.get("tie_word_embeddings", False))
        self.hd = int(cfg.get("head_dim") or self.D // self.H)
        self.dtype = dtype
        arch = (cfg.get("architectures") or ["LlamaForCausalLM"])[0]
        if arch.startswith("Qwen2For"):
            # Qwen2Attention: q/k/v_proj bias=True, o_proj bias=False
            self.bias = ("q_proj", "k_proj", "v_proj")
            self.window = cfg.get("sliding_window") if cfg.get("use_sliding_window") else None
        elif arch.startswith("MistralFor"):
            self.bias = ()
            self.window = cfg.get("sliding_window")
        elif arch.startswith("LlamaFor"):
            # LlamaAttention: bias=config.attention_bias on all four projections
            self.bias = ("q_proj", "k_proj", "v_proj", "o_proj") if cfg.get("attention_bias") else ()
            self.window = None
        else:
            raise ValueError(f"reference: architecture {arch} is not implemented")
        self.rope_scaling = cfg.get("rope_scaling")
        w, self.dtypes = read_safetensors(os.path.join(folder, "model.safetensors"))
        self.w = {k: v.astype(dtype) for k, v in w.items()}
        for layer in range(self.L):
            for proj in self.bias:
                name = f"model.layers.{layer}.self_attn.{proj}.bias"
                if name not in self.w:
                    raise ValueError(f"reference: {arch} needs {name}, which the file lacks")

    def linear(self, x, prefix, proj):
        """nn.Linear: x W^T (+ b when the family gives proj a bias)."""
        y = x @ self.w[prefix + proj + ".weight"].T
        if proj.split(".")[-1] in self.bias:
            y = y + self.w[prefix + proj + ".bias"]
        return y

    # HF LlamaRMSNorm: hidden.to(float32); var = mean(x^2); x * rsqrt(var + eps); w * x
    def rmsnorm(self, x, w):
        xf = x.astype(np.float32) if self.dtype == np.float32 else x
        var = np.mean(xf * xf, axis=-1, keepdims=True)
        return w * (xf / np.sqrt(var + self.dtype(self.eps)))

    # HF ROPE_INIT_FUNCTIONS: "default", or "llama3" (_compute_llama3_parameters), float32
    def inv_freq(self):
        ft = np.float32 if self.dtype == np.float32 else np.float64
        idx = np.arange(0, self.hd, 2, dtype=np.int64).astype(ft)
        inv_freq = (ft(1.0) / (ft(self.theta) ** (idx / ft(self.hd)))).astype(ft)
        rs = self.rope_scaling
        kind = (rs.get("rope_type", rs.get("type")) if rs else None) or "default"
        if kind == "default":
            return inv_freq
        if kind != "llama3":
            raise ValueError(f"reference: rope_type {kind} is not implemented")
        factor = rs["factor"]
        low_freq_factor = rs["low_freq_factor"]
        high_freq_factor = rs["high_freq_factor"]
        old_context_len = rs["original_max_position_embeddings"]
        low_freq_wavelen = old_context_len / low_freq_factor
        high_freq_wavelen = old_context_len / high_freq_factor
        wavelen = (2 * math.pi / inv_freq).astype(ft)
        # wavelen < high_freq_wavelen: unchanged; wavelen > low_freq_wavelen: divided by factor
        inv_freq_llama = np.where(wavelen > low_freq_wavelen, inv_freq / ft(factor), inv_freq)
        smooth = ((old_context_len / wavelen - low_freq_factor) /
                  (high_freq_factor - low_freq_factor)).astype(ft)
        smoothed = (ft(1) - smooth) * inv_freq_llama / ft(factor) + smooth * inv_freq_llama
        is_medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
        return np.where(is_medium, smoothed, inv_freq_llama).astype(ft)

    # HF LlamaRotaryEmbedding, computed in float32 like HF
    def rope_tables(self, T):
        ft = np.float32 if self.dtype == np.float32 else np.float64
        inv_freq = self.inv_freq()
        pos = np.arange(T, dtype=np.int64).astype(ft)
        freqs = np.outer(pos, inv_freq).astype(ft)          # [T, hd/2]
        emb = np.concatenate([freqs, freqs], axis=-1)       # [T, hd]
        return np.cos(emb).astype(self.dtype), np.sin(emb).astype(self.dtype)

    @staticmethod
    def rotate_half(x):
        half = x.shape[-1] // 2
        return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)

    @staticmethod
    def repeat_kv(x, n_rep):
        """[KVH, T, hd] -> [KVH * n_rep, T, hd], kv head j serving query heads j*n_rep.."""
        if n_rep == 1:
            return x
        kvh, t, d = x.shape
        return np.broadcast_to(x[:, None], (kvh, n_rep, t, d)).reshape(kvh * n_rep, t, d)

    def logits(self, ids):
        """Logits [T, V] for one sequence of ids."""
        w = self.w
        head = w["model.embed_tokens.weight"] if self.tied else w["lm_head.weight"]
        return self.hidden(ids) @ head.T

    def score(self, ids):
        """LlamaForSequenceClassification with one label: score.weight . h[last]."""
        return float((self.hidden(ids)[-1] @ self.w["score.weight"].T)[0])

    def hidden(self, ids):
        """Final hidden states [T, D] (after the final norm) for one sequence of ids."""
        ids = np.asarray(ids, dtype=np.int64)
        T = len(ids)
        if T > self.max_pos:
            raise ValueError(f"sequence of {T} tokens exceeds max_position_embeddings")
        w = self.w
        x = w["model.embed_tokens.weight"][ids]                       # [T, D]
        cos, sin = self.rope_tables(T)
        mask = np.triu(np.full((T, T), -np.inf, dtype=self.dtype), k=1)
        if self.window is not None:  # Mistral: key j visible from i only if i - j < window
            mask = mask + np.tril(np.full((T, T), -np.inf, dtype=self.dtype), k=-int(self.window))
        scale = self.dtype(self.hd ** -0.5)
        n_rep = self.H // self.KVH
        for layer in range(self.L):
            p = f"model.layers.{layer}."
            h = self.rmsnorm(x, w[p + "input_layernorm.weight"])
            q = self.linear(h, p, "self_attn.q_proj").reshape(T, self.H, self.hd)
            k = self.linear(h, p, "self_attn.k_proj").reshape(T, self.KVH, self.hd)
            v = self.linear(h, p, "self_attn.v_proj").reshape(T, self.KVH, self.hd)
            q, k, v = (a.transpose(1, 0, 2) for a in (q, k, v))        # [heads, T, hd]
            q = q * cos + self.rotate_half(q) * sin
            k = k * cos + self.rotate_half(k) * sin
            k, v = self.repeat_kv(k, n_rep), self.repeat_kv(v, n_rep)
            s = (q @ k.transpose(0, 2, 1)) * scale + mask              # [H, T, T]
            s = s - s.max(axis=-1, keepdims=True)
            pr = np.exp(s)
            pr = pr / pr.sum(axis=-1, keepdims=True)
            o = (pr @ v).transpose(1, 0, 2).reshape(T, self.H * self.hd)
            x = x + self.linear(o, p, "self_attn.o_proj")
            h = self.rmsnorm(x, w[p + "post_attention_layernorm.weight"])
            g = h @ w[p + "mlp.gate_proj.weight"].T
            u = h @ w[p + "mlp.up_proj.weight"].T
            silu = g / (self.dtype(1.0) + np.exp(-g))
            x = x + (silu * u) @ w[p + "mlp.down_proj.weight"].T
        return self.rmsnorm(x, w["model.norm.weight"])

    def logprobs(self, ids, temperature=1.0):
        """log p(ids[t+1] | ids[..t]) for t = 0..T-2, log-softmax in float64."""
        z = self.logits(ids).astype(np.float64) / float(temperature)
        z = z - z.max(axis=-1, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=-1))
        t = np.arange(len(ids) - 1)
        return z[t, np.asarray(ids[1:])] - lse[:-1]


# ---- subcommands ----------------------------------------------------------------------

def read_jsonl(path_or_file):
    f = open(path_or_file) if isinstance(path_or_file, str) else path_or_file
    with f:
        return [json.loads(line) for line in f if line.strip()]


def cmd_mkrm(a):
    """A LlamaForSequenceClassification folder from a causal-LM folder: same body, no
    lm_head, a random score.weight [1, D], architectures and num_labels set as HF does."""
    os.makedirs(a.dst, exist_ok=True)
    with open(os.path.join(a.src, "config.json")) as f:
        cfg = json.load(f)
    w, _ = read_safetensors(os.path.join(a.src, "model.safetensors"))
    w.pop("lm_head.weight", None)
    rng = np.random.default_rng(a.seed)
    w["score.weight"] = (rng.standard_normal((1, int(cfg["hidden_size"]))) * 0.5).astype(np.float32)
    cfg["architectures"] = ["LlamaForSequenceClassification"]
    cfg["num_labels"] = 1
    with open(os.path.join(a.dst, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    write_safetensors(os.path.join(a.dst, "model.safetensors"), w)
    for extra in ("tokenizer.json",):
        if os.path.exists(os.path.join(a.src, extra)):
            shutil.copy(os.path.join(a.src, extra), os.path.join(a.dst, extra))


def cmd_rmscore(a):
    m = Llama(a.dir)
    for line in read_jsonl(sys.stdin):
        print(json.dumps({"score": m.score(line["tokens"])}))


def cmd_logprobs(a):
    m = Llama(a.dir, np.float64 if a.float64 else np.float32)
    for rec in read_jsonl(sys.stdin):
        lp = m.logprobs(rec["tokens"], a.temperature)
        print(json.dumps({"logprobs": [float(x) for x in lp]}))


def cmd_convert(a):
    tensors, _ = read_safetensors(os.path.join(a.src, "model.safetensors"))
    os.makedirs(a.dst, exist_ok=True)
    shutil.copyfile(os.path.join(a.src, "config.json"), os.path.join(a.dst, "config.json"))
    write_safetensors(os.path.join(a.dst, "model.safetensors"), tensors, a.dtype)


def cmd_randomize(a):
    tensors, _ = read_safetensors(os.path.join(a.src, "model.safetensors"))
    rng = np.random.default_rng(a.seed)
    out = {}
    for name in sorted(tensors):
        shape = tensors[name].shape
        if name.endswith(".bias"):
            out[name] = (a.std * rng.standard_normal(size=shape)).astype(np.float32)
        elif len(shape) == 1:  # norm weights
            out[name] = rng.uniform(0.8, 1.2, size=shape).astype(np.float32)
        else:
            out[name] = (a.std * rng.standard_normal(size=shape)).astype(np.float32)
    os.makedirs(a.dst, exist_ok=True)
    shutil.copyfile(os.path.join(a.src, "config.json"), os.path.join(a.dst, "config.json"))
    write_safetensors(os.path.join(a.dst, "model.safetensors"), out, "F32")


def cmd_fillbias(a):
    path = os.path.join(a.dir, "model.safetensors")
    tensors, _ = read_safetensors(path)
    rng = np.random.default_rng(a.seed)
    names = [n for n in sorted(tensors) if n.endswith(".bias")]
    if not names:
        print(f"FAIL: {path} has no bias tensors")
        return 1
    for name in names:
        tensors[name] = (a.std * rng.standard_normal(size=tensors[name].shape)).astype(np.float32)
    write_safetensors(path, tensors, "F32")
    return 0


def cmd_compare(a):
    xs, ys = read_jsonl(a.a), read_jsonl(a.b)
    if len(xs) != len(ys):
        print(f"FAIL: {a.a} has {len(xs)} lines, {a.b} has {len(ys)}")
        return 1
    worst, allv = 0.0, []
    for i, (x, y) in enumerate(zip(xs, ys)):
        lx, ly = np.asarray(x["logprobs"]), np.asarray(y["logprobs"])
        if lx.shape != ly.shape:
            print(f"FAIL: line {i + 1}: {len(lx)} logprobs vs {len(ly)}")
            return 1
        if not np.all(np.isfinite(lx)) or not np.all(np.isfinite(ly)):
            print(f"FAIL: line {i + 1}: non-finite logprobs")
            return 1
        worst = max(worst, float(np.max(np.abs(lx - ly))))
        allv.append(ly)
    v = np.concatenate(allv)
    status = "ok" if worst < a.tol else "FAIL"
    print(f"{status}: {a.label}: max |diff| = {worst:.3g} over {v.size} logprobs "
          f"(tol {a.tol:g}; reference logprobs range [{v.min():.3f}, {v.max():.3f}], "
          f"std {v.std():.3f})")
    return 0 if worst < a.tol else 1


def cmd_makeseqs(a):
    with open(os.path.join(a.dir, "config.json")) as f:
        cfg = json.load(f)
    V, P = int(cfg["vocab_size"]), int(cfg["max_position_embeddings"])
    rng = np.random.default_rng(a.seed)
    lengths = [2, 3, P, P - 1] + [int(rng.integers(2, P + 1)) for _ in range(max(0, a.n - 4))]
    for n in lengths[:a.n]:
        ids = [1] + [int(t) for t in rng.integers(0, V, size=n - 1)]
        print(json.dumps({"tokens": ids}))


def cmd_sftbatch(a):
    with open(a.out, "w") as f:
        for i, rec in enumerate(read_jsonl(a.seqs)):
            toks = rec["tokens"]
            pl = 1 + i % max(1, len(toks) - 1)
            f.write(json.dumps({"group": i, "tokens": toks, "prompt_len": pl,
                                "reward": 0.0}) + "\n")


def sft_loss(m, batch):
    """Token-mean of -log p over every completion token of the batch (float64)."""
    total, n = 0.0, 0
    for rec in batch:
        lp = m.logprobs(rec["tokens"])
        comp = lp[rec["prompt_len"] - 1:]
        total -= float(comp.sum())
        n += len(comp)
    return total / n


def cmd_gradcheck(a):
    m = Llama(a.dir, np.float64)
    batch = read_jsonl(a.batch)
    grads, _ = read_safetensors(a.grads)
    expect = set(m.w) if not m.tied else set(m.w) - {"lm_head.weight"}
    if set(grads) != expect:
        print(f"FAIL: gradient tensors {sorted(set(grads) ^ expect)} differ from the weights")
        return 1
    rng = np.random.default_rng(a.seed)
    worst, checked = 0.0, 0
    for name in sorted(grads):
        g = grads[name].astype(np.float64)
        if g.shape != m.w[name].shape:
            print(f"FAIL: gradient of {name} has shape {g.shape}, weight {m.w[name].shape}")
            return 1
        flat = g.reshape(-1)
        # the largest entry plus random ones: the largest is always well above noise
        picks = [int(np.argmax(np.abs(flat)))] + \
            [int(i) for i in rng.integers(0, flat.size, size=a.per_tensor - 1)]
        for i in picks:
            w = m.w[name].reshape(-1)
            old = w[i]
            w[i] = old + a.h
            up = sft_loss(m, batch)
            w[i] = old - a.h
            down = sft_loss(m, batch)
            w[i] = old
            fd = (up - down) / (2 * a.h)
            err = abs(fd - flat[i]) / max(a.floor, abs(fd))
            worst = max(worst, err)
            checked += 1
            if err > a.tol:
                print(f"FAIL: d loss / d {name}[{i}]: tool {flat[i]:.6g}, finite "
                      f"difference {fd:.6g} (relative error {err:.3g})")
                return 1
    print(f"ok: gradient matches central finite differences at {checked} entries "
          f"(worst relative error {worst:.3g}, tol {a.tol:g})")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("logprobs")
    p.add_argument("dir")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--float64", action="store_true")
    p.set_defaults(fn=cmd_logprobs)
    p = sub.add_parser("mkrm")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_mkrm)
    p = sub.add_parser("rmscore")
    p.add_argument("dir")
    p.set_defaults(fn=cmd_rmscore)
    p = sub.add_parser("convert")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--dtype", choices=["F32", "F16", "BF16"], required=True)
    p.set_defaults(fn=cmd_convert)
    p = sub.add_parser("randomize")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--std", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_randomize)
    p = sub.add_parser("fillbias")
    p.add_argument("dir")
    p.add_argument("--std", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_fillbias)
    p = sub.add_parser("compare")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--label", default="logprobs")
    p.set_defaults(fn=cmd_compare)
    p = sub.add_parser("makeseqs")
    p.add_argument("dir")
    p.add_argument("n", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_makeseqs)
    p = sub.add_parser("sftbatch")
    p.add_argument("seqs")
    p.add_argument("out")
    p.set_defaults(fn=cmd_sftbatch)
    p = sub.add_parser("gradcheck")
    p.add_argument("dir")
    p.add_argument("batch")
    p.add_argument("grads")
    p.add_argument("--tol", type=float, default=2e-3)
    p.add_argument("--per-tensor", type=int, default=3)
    p.add_argument("--h", type=float, default=1e-4)
    p.add_argument("--floor", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_gradcheck)
    a = ap.parse_args()
    return a.fn(a) or 0


if __name__ == "__main__":
    sys.exit(main())
