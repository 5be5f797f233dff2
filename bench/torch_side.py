#!/usr/bin/python3
"""torch_side.py - the PyTorch side of the side-by-side benchmark (bench/side_by_side.sh).

    torch_side.py check --ckpt DIR --logits FILE
        load DIR (config.json + model.safetensors, read here with numpy), run the fixed check
        batch of bench_side.c (2 x 12 tokens) and compare with the logits Cohort wrote to FILE
    torch_side.py run --ckpt DIR --shape NAME [--threads N] [--batch B --seq T]
                      [--prompt-len P --new-tokens N] [--min-time S] [--min-iters K]
                      [--no-learner]
                      [--no-sampler] [--grpo --grpo-steps K]
        JSON lines: learner tokens/s (forward, log_softmax + gather, the GRPO clipped loss,
        backward, grad-norm clipping, AdamW), sampler tokens/s (1 and 16 completions of one
        prompt, KV cache, prompt prefilled once), GRPO steps/s (addition, 3 digits, 32 prompts
        x 8 completions: sampling, reward, group-normalised advantages, loss, AdamW).

The model is a plain PyTorch Llama (RMSNorm, grouped-query attention, rotary embeddings with
rotate_half, SwiGLU, tied or untied lm_head, optional q/k/v/o biases) in float32. The learner
batch, its rewards and behaviour log-probs are the same pure functions of (b, t) that
bench_side.c uses, so the first step's loss is comparable number for number.
"""
import argparse
import json
import math
import os
import random
import re
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


def fail(msg):
    print("torch_side: " + msg, file=sys.stderr)
    sys.exit(1)


# ---- checkpoint --------------------------------------------------------------------------

def read_safetensors(path):
    """{name: float32 numpy array} of a safetensors file (F32, F16 or BF16 tensors)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        fail(f"{path}: too short for a safetensors header")
    (hlen,) = struct.unpack("<Q", data[:8])
    if 8 + hlen > len(data):
        fail(f"{path}: header length {hlen} runs past the end of the file ({len(data)} bytes)")
    header = json.loads(data[8:8 + hlen].decode("utf-8"))
    base = 8 + hlen
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        raw = data[base + start:base + end]
        dt = info["dtype"]
        if dt == "F32":
            arr = np.frombuffer(raw, dtype="<f4")
        elif dt == "F16":
            arr = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        elif dt == "BF16":
            arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            fail(f"{path}: tensor {name} has dtype {dt}; only F32, F16, BF16 are read")
        out[name] = arr.reshape(info["shape"]).copy()
    return out


class Llama(torch.nn.Module):
    def __init__(self, cfg, tensors):
        super().__init__()
        self.V = cfg["vocab_size"]
        self.D = cfg["hidden_size"]
        self.L = cfg["num_hidden_layers"]
        self.H = cfg["num_attention_heads"]
        self.KVH = cfg.get("num_key_value_heads", self.H)
        self.hd = cfg.get("head_dim") or self.D // self.H
        self.eps = cfg.get("rms_norm_eps", 1e-6)
        self.theta = cfg.get("rope_theta", 10000.0)
        self.tied = bool(cfg.get("tie_word_embeddings", False))
        self.max_seq = cfg.get("max_position_embeddings", 2048)
        if cfg.get("rope_scaling"):
            fail("rope_scaling is not implemented on the PyTorch side")

        def P(name):
            if name not in tensors:
                fail(f"model.safetensors has no tensor {name}")
            return torch.nn.Parameter(torch.from_numpy(tensors[name]))

        def opt(name):
            return P(name) if name in tensors else None

        self.embed = P("model.embed_tokens.weight")
        self.layers = []
        for i in range(self.L):
            pre = f"model.layers.{i}."
            lay = {}
            for k in ("input_layernorm", "post_attention_layernorm"):
                lay[k] = P(pre + k + ".weight")
            for k in ("q_proj", "k_proj", "v_proj", "o_proj"):
                lay[k] = P(pre + "self_attn." + k + ".weight")
                lay[k + "_b"] = opt(pre + "self_attn." + k + ".bias")
            for k in ("gate_proj", "up_proj", "down_proj"):
                lay[k] = P(pre + "mlp." + k + ".weight")
            self.layers.append(lay)
            for k, v in lay.items():
                if v is not None:
                    self.register_parameter(f"l{i}_{k}", v)
        self.norm = P("model.norm.weight")
        self.lm_head = self.embed if self.tied else P("lm_head.weight")
        inv = 1.0 / (self.theta ** (torch.arange(0, self.hd, 2, dtype=torch.float64) / self.hd))
        pos = torch.arange(self.max_seq, dtype=torch.float64)
        fr = torch.outer(pos, inv)
        emb = torch.cat([fr, fr], dim=-1)
        self.cos = emb.cos().float()
        self.sin = emb.sin().float()

    def rms(self, x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * w

    @staticmethod
    def rot(x):
        h = x.shape[-1] // 2
        return torch.cat([-x[..., h:], x[..., :h]], dim=-1)

    def rope(self, x, pos0, T):
        c = self.cos[pos0:pos0 + T]
        s = self.sin[pos0:pos0 + T]
        return x * c + self.rot(x) * s

    def attn_proj(self, lay, h, B, T, pos0):
        q = F.linear(h, lay["q_proj"], lay["q_proj_b"]).view(B, T, self.H, self.hd).transpose(1, 2)
        k = F.linear(h, lay["k_proj"], lay["k_proj_b"]).view(B, T, self.KVH, self.hd).transpose(1, 2)
        v = F.linear(h, lay["v_proj"], lay["v_proj_b"]).view(B, T, self.KVH, self.hd).transpose(1, 2)
        return self.rope(q, pos0, T), self.rope(k, pos0, T), v

    def mlp(self, lay, x):
        h = self.rms(x, lay["post_attention_layernorm"])
        return F.linear(F.silu(F.linear(h, lay["gate_proj"])) * F.linear(h, lay["up_proj"]),
                        lay["down_proj"])

    def attend(self, q, k, v, mask):
        """q [B, H, Tq, hd], k/v [B, KVH, Tk, hd] -> [B, Tq, H*hd] (grouped query heads)."""
        B, H, Tq, hd = q.shape
        g = H // self.KVH
        q = q.reshape(B, self.KVH, g * Tq, hd) if g > 1 else q
        s = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(hd))
        if g > 1:
            s = s.view(B, self.KVH, g, Tq, -1)
        if mask is not None:
            s = s + mask
        p = torch.softmax(s, dim=-1)
        if g > 1:
            p = p.view(B, self.KVH, g * Tq, -1)
        o = torch.matmul(p, v)  # [B, KVH, g*Tq, hd]
        return o.view(B, H, Tq, hd).transpose(1, 2).reshape(B, Tq, H * hd)

    def forward(self, tokens):
        """Full causal forward, tokens [B, T] -> logits [B, T, V]."""
        B, T = tokens.shape
        x = self.embed[tokens]
        mask = torch.full((T, T), float("-inf")).triu(1)
        for lay in self.layers:
            h = self.rms(x, lay["input_layernorm"])
            q, k, v = self.attn_proj(lay, h, B, T, 0)
            x = x + F.linear(self.attend(q, k, v, mask), lay["o_proj"], lay["o_proj_b"])
            x = x + self.mlp(lay, x)
        return F.linear(self.rms(x, self.norm), self.lm_head)

    def new_cache(self, rows, S):
        return [(torch.zeros(rows, self.KVH, S, self.hd), torch.zeros(rows, self.KVH, S, self.hd))
                for _ in range(self.L)]

    def step(self, tokens, cache, pos0):
        """Forward of tokens [B, T] at positions pos0.. with the KV cache (filled in place);
        returns the last position's logits [B, V]."""
        B, T = tokens.shape
        x = self.embed[tokens]
        mask = torch.full((T, pos0 + T), float("-inf")).triu(pos0 + 1) if T > 1 else None
        for lay, (kc, vc) in zip(self.layers, cache):
            h = self.rms(x, lay["input_layernorm"])
            q, k, v = self.attn_proj(lay, h, B, T, pos0)
            kc[:B, :, pos0:pos0 + T] = k
            vc[:B, :, pos0:pos0 + T] = v
            o = self.attend(q, kc[:B, :, :pos0 + T], vc[:B, :, :pos0 + T], mask)
            x = x + F.linear(o, lay["o_proj"], lay["o_proj_b"])
            x = x + self.mlp(lay, x)
        return F.linear(self.rms(x[:, -1], self.norm), self.lm_head)


def load(ckpt):
    with open(os.path.join(ckpt, "config.json")) as f:
        cfg = json.load(f)
    return Llama(cfg, read_safetensors(os.path.join(ckpt, "model.safetensors"))), cfg


# ---- generation --------------------------------------------------------------------------

def generate(model, prompt, rows, new_tokens, eos_id=-1, temperature=1.0, gen=None):
    """rows completions of one prompt: prefill once, share its KV cache, decode in lock step
    (all rows keep decoding until every row has ended). Returns (tokens [rows, n],
    logp [rows, n], lens [rows])."""
    P = len(prompt)
    cache = model.new_cache(rows, P + new_tokens)
    logits = model.step(torch.tensor([prompt]), cache, 0)
    if rows > 1:
        for kc, vc in cache:
            kc[1:, :, :P] = kc[:1, :, :P]
            vc[1:, :, :P] = vc[:1, :, :P]
        logits = logits.expand(rows, -1)
    toks = torch.zeros(rows, new_tokens, dtype=torch.long)
    lps = torch.zeros(rows, new_tokens)
    alive = torch.ones(rows, dtype=torch.bool)
    lens = torch.full((rows,), new_tokens, dtype=torch.long)
    for i in range(new_tokens):
        lp = torch.log_softmax(logits / temperature, dim=-1)
        nxt = torch.multinomial(lp.exp(), 1, generator=gen)
        toks[:, i] = nxt[:, 0]
        lps[:, i] = lp.gather(1, nxt)[:, 0]
        if eos_id >= 0:
            ended = alive & (nxt[:, 0] == eos_id)
            lens[ended] = i + 1
            alive &= ~ended
            if not bool(alive.any()):
                return toks[:, :i + 1], lps[:, :i + 1], lens
        if i + 1 < new_tokens:
            logits = model.step(nxt, cache, P + i)
    return toks, lps, lens


# ---- the learning rule (learner/loss.h: grpo, token_mean, eps 0.2/0.2, beta 0) ----------

def grpo_loss(model, tokens, mask, beh, adv, eps_low=0.2, eps_high=0.2):
    """tokens [B, T]; mask/beh/adv [B, T-1] aligned with the predicting rows (row t predicts
    token t + 1); mask 1 on completion tokens. token_mean aggregation."""
    logits = model(tokens)[:, :-1]
    logp = torch.log_softmax(logits, dim=-1).gather(2, tokens[:, 1:, None])[..., 0]
    ratio = torch.exp(logp - beh)
    surr = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * adv)
    return -(surr * mask).sum() / mask.sum()


def group_adv(rewards, G):
    r = np.asarray(rewards, dtype=np.float64).reshape(-1, G)
    if G == 1:
        return np.zeros(r.size)
    std = r.std(axis=1, ddof=1, keepdims=True)
    return ((r - r.mean(axis=1, keepdims=True)) / (std + 1e-4)).reshape(-1)


def make_opt(model, lr):
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), eps=1e-8,
                             weight_decay=0.0, foreach=True)


def update(model, opt, loss):
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


# ---- measurements ------------------------------------------------------------------------

def check_token(b, t, V):
    return 3 + (b * 7919 + t * 104729 + 13) % (V - 3)


def emit(a, line, value, unit, **extra):
    rec = {"side": "torch", "shape": a.shape, "threads": a.threads, "line": line,
           "value": value, "unit": unit}
    rec.update(extra)
    print(json.dumps(rec), flush=True)


def timed(fn, min_time, min_iters):
    fn()  # untimed warm-up
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= min_time and n >= min_iters:
            return n, dt


def bench_learner(a, model):
    B, T, V = a.batch, a.seq, model.V
    P, G = T // 4, 4 if a.batch % 4 == 0 else a.batch
    tokens = torch.tensor([[check_token(b, t, V) for t in range(T)] for b in range(B)])
    mask = torch.zeros(B, T - 1)
    mask[:, P - 1:] = 1
    beh = torch.zeros(B, T - 1)
    for b in range(B):
        for k in range(T - P):
            beh[b, P - 1 + k] = np.float32(-math.log(V)) + np.float32(0.05) * ((b + k) % 5 - 2)
    rewards = [b % 2 for b in range(B)]
    opt = make_opt(model, 1e-5)
    first = {}

    def one():
        adv = torch.from_numpy(group_adv(rewards, G).astype(np.float32))[:, None].expand(B, T - 1)
        loss = grpo_loss(model, tokens, mask, beh, adv)
        first.setdefault("loss0", float(loss))
        update(model, opt, loss)

    n, dt = timed(one, a.min_time, a.min_iters)
    emit(a, "learner", n * B * T / dt, "tokens/s", batch=B, seq=T, steps=n, loss0=first["loss0"])


def bench_sampler(a, model):
    prompt = [3 + i for i in range(a.prompt_len)]
    gen = torch.Generator().manual_seed(7)
    for rows in (1, 16):
        with torch.inference_mode():
            n, dt = timed(lambda: generate(model, prompt, rows, a.new_tokens, -1, 1.0, gen),
                          a.min_time, a.min_iters)
        emit(a, "sampler1" if rows == 1 else "sampler16", n * rows * a.new_tokens / dt,
             "tokens/s", rows=rows, prompt_len=a.prompt_len, new_tokens=a.new_tokens, calls=n)


def encode(text):
    return [3 + ord(c) - 32 for c in text]


def decode(ids):
    return "".join(chr(i - 3 + 32) for i in ids if 3 <= i < 98)


def bench_grpo(a, model):
    """One GRPO step as cohort-train runs it: 32 addition prompts (3 digits) x 8 completions
    at temperature 1 (at most 8 new tokens, EOS ends a completion), reward 1 for the exact
    sum, grpo advantages, token_mean loss over the completion tokens (EOS included), grad
    clipping 1.0, AdamW lr 5e-4, betas 0.9/0.99."""
    if model.V != 98:
        fail("the GRPO step needs the built-in 98-id character vocabulary")
    rnd = random.Random(1)
    gen = torch.Generator().manual_seed(1)
    opt = make_opt(model, 5e-4)
    NP, G, M, EOS, BOS = 32, 8, 8, 2, 1
    stats = {"reward": []}

    def one():
        seqs, beh, rewards = [], [], []
        with torch.inference_mode():
            for _ in range(NP):
                x, y = rnd.randrange(1000), rnd.randrange(1000)
                prompt = [BOS] + encode(f"{x}+{y}=")
                toks, lps, lens = generate(model, prompt, G, M, EOS, 1.0, gen)
                for g in range(G):
                    L = int(lens[g])
                    comp = toks[g, :L].tolist()
                    text = decode(comp[:-1] if comp and comp[-1] == EOS else comp)
                    rewards.append(1.0 if text == str(x + y) else 0.0)
                    seqs.append((prompt, comp))
                    beh.append(lps[g, :L].clone())
        stats["reward"].append(sum(rewards) / len(rewards))
        adv = group_adv(rewards, G)
        T = max(len(p) + len(c) for p, c in seqs)
        B = len(seqs)
        tokens = torch.zeros(B, T, dtype=torch.long)
        mask = torch.zeros(B, T - 1)
        behm = torch.zeros(B, T - 1)
        advm = torch.zeros(B, T - 1)
        for b, (p, c) in enumerate(seqs):
            tokens[b, :len(p) + len(c)] = torch.tensor(p + c)
            s = len(p) - 1
            mask[b, s:s + len(c)] = 1
            behm[b, s:s + len(c)] = beh[b]
            advm[b, s:s + len(c)] = float(adv[b])
        update(model, opt, grpo_loss(model, tokens, mask, behm, advm))

    one()  # untimed warm-up step
    n, t0 = 0, time.perf_counter()
    for _ in range(a.grpo_steps):
        one()
        n += 1
    dt = time.perf_counter() - t0
    emit(a, "grpo_step", n / dt, "steps/s", steps=n, prompts=NP, group=G,
         reward_mean=sum(stats["reward"][1:]) / n)


def cmd_check(a):
    model, cfg = load(a.ckpt)
    V = model.V
    tokens = torch.tensor([[check_token(b, t, V) for t in range(12)] for b in range(2)])
    with torch.inference_mode():
        ours = model(tokens).numpy()
    theirs = np.fromfile(a.logits, dtype="<f4")
    if theirs.size != ours.size:
        fail(f"{a.logits} holds {theirs.size} floats, expected {ours.size} (2 x 12 x {V})")
    diff = float(np.abs(theirs.reshape(ours.shape) - ours).max())
    # the same tokens through the KV-cache path must give the same last-position logits
    with torch.inference_mode():
        cache = model.new_cache(2, 12)
        last = model.step(tokens[:, :8], cache, 0)
        for t in range(8, 12):
            last = model.step(tokens[:, t:t + 1], cache, t)
    kv = float(np.abs(last.numpy() - ours[:, -1]).max())
    print(json.dumps({"side": "torch", "event": "check", "ckpt": a.ckpt,
                      "max_abs_diff": diff, "kv_cache_diff": kv, "agree": diff < 1e-3}))
    return 0 if diff < 1e-3 and kv < 1e-3 else 1


def blas_info():
    """The BLAS PyTorch was built with (torch.__config__.show(): BLAS_INFO=...)."""
    m = re.search(r"BLAS_INFO=([^,\s]+)", torch.__config__.show())
    if m:
        return m.group(1)
    return "unknown"


def cmd_run(a):
    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)  # denormal moments slowed PyTorch's AdamW step
    model, cfg = load(a.ckpt)
    print(json.dumps({"side": "torch", "event": "torch", "version": torch.__version__,
                      "threads": torch.get_num_threads(),
                      "blas": blas_info()}), flush=True)
    if a.learner:
        bench_learner(a, model)
    if a.sampler:
        bench_sampler(a, model)
    if a.grpo:
        model, cfg = load(a.ckpt)  # fresh weights, as the Cohort trainer loads them
        bench_grpo(a, model)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cmd", choices=["check", "run"])
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--logits")
    ap.add_argument("--shape", default="?")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--min-time", type=float, default=2.0)
    ap.add_argument("--min-iters", type=int, default=2)
    ap.add_argument("--no-learner", dest="learner", action="store_false")
    ap.add_argument("--no-sampler", dest="sampler", action="store_false")
    ap.add_argument("--grpo", action="store_true")
    ap.add_argument("--grpo-steps", type=int, default=3)
    a = ap.parse_args()
    if not os.path.isfile(os.path.join(a.ckpt, "model.safetensors")):
        fail(f"{a.ckpt}: no model.safetensors")
    if a.threads < 1 or a.batch < 2 or a.seq < 4 or a.prompt_len < 1 or a.new_tokens < 1 \
            or a.min_iters < 1:
        fail("--threads >= 1, --batch >= 2, --seq >= 4, --prompt-len, --new-tokens, --min-iters >= 1")
    if a.cmd == "check":
        if not a.logits:
            fail("check needs --logits FILE (from bench_side logits)")
        return cmd_check(a)
    return cmd_run(a)


if __name__ == "__main__":
    sys.exit(main())
