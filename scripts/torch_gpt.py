"""GPT-2 written out by hand in PyTorch, with llm.c's parameter layout.

Shared by scripts/torch_parity.py (the correctness oracle for ct-parity) and
scripts/torch_bench.py (the PyTorch throughput reference). It is GPT-2 exactly as
BENCH.md defines it: pre-LayerNorm blocks, learned positional embeddings, tied
token embedding / LM head, GELU (tanh), biases everywhere, LayerNorm eps 1e-5,
causal attention scaled by 1/sqrt(head size), no dropout. No `transformers`.

Importing this module makes sure torch is importable: when the running
interpreter lacks it (the default python3 here is a pyenv build without torch),
the calling script is re-executed with the first of `$CTRAIN_TORCH_PYTHON` (when
set: a venv with PyTorch 2, say), `python3`, `/usr/bin/python3` that has it; when
none does, the process exits with 77 (CTest's "skipped").

llm.c parameter order (the model file's and ct-parity's):
  wte (V,C) wpe (maxT,C) ln1w ln1b (L,C) qkvw (L,3C,C) qkvb (L,3C) attprojw (L,C,C)
  attprojb (L,C) ln2w ln2b (L,C) fcw (L,4C,C) fcb (L,4C) fcprojw (L,C,4C) fcprojb (L,C)
  lnfw lnfb (C)
"""
import math
import os
import shutil
import struct
import subprocess
import sys

SKIP = 77  # CTest SKIP_RETURN_CODE
_REEXEC_ENV = "CTRAIN_TORCH_REEXEC"


def _python_candidates():
    """Interpreters to try for torch, in order, excluding the running one. By path, not by
    realpath: a venv's python is a link to its base interpreter but imports other packages."""
    seen = {os.path.abspath(sys.executable)}
    for cand in (os.environ.get("CTRAIN_TORCH_PYTHON"), shutil.which("python3"),
                 "/usr/bin/python3"):
        if not cand or not os.path.exists(cand):
            continue
        path = os.path.abspath(cand)
        if path in seen:
            continue
        seen.add(path)
        yield cand


def _ensure_torch():
    try:
        import torch  # noqa: F401
        return
    except ImportError:
        pass
    if os.environ.get(_REEXEC_ENV) != "1":
        for cand in _python_candidates():
            ok = subprocess.run([cand, "-c", "import torch"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL).returncode == 0
            if ok:
                os.environ[_REEXEC_ENV] = "1"
                sys.stdout.flush()
                os.execv(cand, [cand] + sys.argv)
    print("SKIP: torch is not importable by %s, python3 or /usr/bin/python3 "
          "(install Debian's python3-torch: scripts/install-deps.sh --with-torch)"
          % sys.executable, file=sys.stderr)
    sys.exit(SKIP)


_ensure_torch()

import numpy as np  # noqa: E402  (Debian's python3-torch depends on python3-numpy)
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

MODEL_MAGIC = 20240326
MODEL_VERSION_FP32 = 3
NAMES = ["wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb",
         "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb"]
LAYER_NAMES = NAMES[2:14]
DECAYED = {"wte", "wpe", "qkvw", "attprojw", "fcw", "fcprojw"}  # the 2-D weights


def llmc_shapes(L, C, V, maxT):
    """Shapes of the 16 tensors in llm.c order (V unpadded)."""
    return {
        "wte": (V, C), "wpe": (maxT, C), "ln1w": (L, C), "ln1b": (L, C),
        "qkvw": (L, 3 * C, C), "qkvb": (L, 3 * C), "attprojw": (L, C, C), "attprojb": (L, C),
        "ln2w": (L, C), "ln2b": (L, C), "fcw": (L, 4 * C, C), "fcb": (L, 4 * C),
        "fcprojw": (L, C, 4 * C), "fcprojb": (L, C), "lnfw": (C,), "lnfb": (C,),
    }


class Block(nn.Module):
    def __init__(self, C, n_head, dtype):
        super().__init__()
        self.n_head = n_head

        def p(*shape):
            return nn.Parameter(torch.zeros(*shape, dtype=dtype))
        self.ln1w, self.ln1b = p(C), p(C)
        self.qkvw, self.qkvb = p(3 * C, C), p(3 * C)
        self.attprojw, self.attprojb = p(C, C), p(C)
        self.ln2w, self.ln2b = p(C), p(C)
        self.fcw, self.fcb = p(4 * C, C), p(4 * C)
        self.fcprojw, self.fcprojb = p(C, 4 * C), p(C)

    def attention(self, x, use_sdpa):
        # x is (B,T,C); q, k, v are (B,NH,T,hs); llm.c packs qkv as [q | k | v] along 3C
        B, T, C = x.shape
        hs = C // self.n_head
        qkv = F.linear(x, self.qkvw, self.qkvb)
        q, k, v = qkv.split(C, dim=2)
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)
        if use_sdpa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
            y = att @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return F.linear(y, self.attprojw, self.attprojb)

    def forward(self, x, use_sdpa):
        C = x.shape[-1]
        x = x + self.attention(F.layer_norm(x, (C,), self.ln1w, self.ln1b, 1e-5), use_sdpa)
        h = F.layer_norm(x, (C,), self.ln2w, self.ln2b, 1e-5)
        h = F.gelu(F.linear(h, self.fcw, self.fcb), approximate="tanh")
        return x + F.linear(h, self.fcprojw, self.fcprojb)


class GPT(nn.Module):
    """GPT-2 with llm.c's tensors; per-layer parameters live in the blocks.

    n_layer L, n_head NH, n_embd C, vocab_size V (unpadded), max_seq maxT."""

    def __init__(self, n_layer, n_head, n_embd, vocab_size, max_seq, dtype=torch.float32,
                 use_sdpa=False):
        super().__init__()
        assert n_embd % n_head == 0, "n_embd must be divisible by n_head"
        self.L, self.NH, self.C, self.V, self.maxT = n_layer, n_head, n_embd, vocab_size, max_seq
        self.use_sdpa = use_sdpa and hasattr(F, "scaled_dot_product_attention")
        self.wte = nn.Parameter(torch.zeros(vocab_size, n_embd, dtype=dtype))
        self.wpe = nn.Parameter(torch.zeros(max_seq, n_embd, dtype=dtype))
        self.blocks = nn.ModuleList([Block(n_embd, n_head, dtype) for _ in range(n_layer)])
        self.lnfw = nn.Parameter(torch.zeros(n_embd, dtype=dtype))
        self.lnfb = nn.Parameter(torch.zeros(n_embd, dtype=dtype))

    def forward(self, idx, targets=None):
        """idx (B,T) int64 -> logits (B,T,V); loss = mean cross-entropy over B*T."""
        B, T = idx.shape
        assert T <= self.maxT, "sequence longer than max_seq"
        x = self.wte[idx] + self.wpe[:T]
        for blk in self.blocks:
            x = blk(x, self.use_sdpa)
        x = F.layer_norm(x, (self.C,), self.lnfw, self.lnfb, 1e-5)
        logits = x @ self.wte.t()  # tied head
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, self.V), targets.reshape(-1))
        return logits, loss

    # ---- llm.c layout -------------------------------------------------------
    def _get(self, name, grad):
        def val(t):
            if not grad:
                return t.detach()
            return t.grad.detach() if t.grad is not None else torch.zeros_like(t)
        if name in LAYER_NAMES:
            return torch.stack([val(getattr(b, name)) for b in self.blocks])
        return val(getattr(self, name))

    def llmc_tensors(self, grad=False):
        """The 16 tensors (or their gradients) in llm.c order, stacked over layers."""
        return [(n, self._get(n, grad)) for n in NAMES]

    @torch.no_grad()
    def load_llmc_tensors(self, tensors):
        """tensors: dict name -> tensor/array with llm.c shapes (V unpadded)."""
        for name in NAMES:
            src = torch.as_tensor(np.asarray(tensors[name]))
            if name in LAYER_NAMES:
                for l, b in enumerate(self.blocks):
                    getattr(b, name).copy_(src[l])
            else:
                getattr(self, name).copy_(src)

    def decay_flags(self):
        """(param, decayed?) pairs: weight decay on the 2-D weights only."""
        return [(p, p.dim() >= 2) for p in self.parameters()]

    @torch.no_grad()
    def init_random(self, gen, std=0.02, ln_std=0.0, bias_std=0.0):
        """Weights ~ N(0, std) (GPT-2's residual projections scaled by 1/sqrt(2L));
        LayerNorm weights 1 + N(0, ln_std), biases N(0, bias_std)."""
        def normal(t, s, mean=0.0):
            t.copy_(torch.randn(t.shape, generator=gen, dtype=torch.float64) * s + mean)
        normal(self.wte, std)
        normal(self.wpe, std)
        proj_std = std / math.sqrt(2 * self.L)
        for b in self.blocks:
            for name in ("ln1w", "ln2w"):
                normal(getattr(b, name), ln_std, 1.0)
            for name in ("ln1b", "ln2b", "qkvb", "attprojb", "fcb", "fcprojb"):
                normal(getattr(b, name), bias_std)
            normal(b.qkvw, std)
            normal(b.fcw, std)
            normal(b.attprojw, proj_std)
            normal(b.fcprojw, proj_std)
        normal(self.lnfw, ln_std, 1.0)
        normal(self.lnfb, bias_std)


def num_params(L, C, V, maxT):
    return sum(int(np.prod(s)) for s in llmc_shapes(L, C, V, maxT).values())


def flops_per_token(L, C, V, T):
    """BENCH.md's training FLOPs per token: 6 x matmul weights (tied head included) +
    12 x L x T x C (attention)."""
    return 6 * (V * C + 12 * L * C * C) + 12 * L * T * C


# ---- llm.c model files ------------------------------------------------------
def write_model(path, model, Vp=None):
    """llm.c model file: int32 header[256] (magic 20240326, version 3, maxT, V, L, NH, C, Vp),
    then the fp32 params in llm.c order with wte padded to Vp rows (zeros)."""
    Vp = model.V if Vp is None else Vp
    assert Vp >= model.V
    header = np.zeros(256, dtype="<i4")
    header[:8] = [MODEL_MAGIC, MODEL_VERSION_FP32, model.maxT, model.V, model.L, model.NH,
                  model.C, Vp]
    with open(path, "wb") as f:
        f.write(header.tobytes())
        for name, t in model.llmc_tensors():
            a = t.to(torch.float32).cpu().numpy().astype("<f4")
            if name == "wte" and Vp > model.V:
                a = np.concatenate([a, np.zeros((Vp - model.V, model.C), dtype="<f4")])
            f.write(np.ascontiguousarray(a).tobytes())


def read_model(path):
    """-> (cfg dict with maxT, V, L, NH, C, Vp; dict name -> float32 array, wte unpadded)."""
    raw = open(path, "rb").read()
    header = np.frombuffer(raw[:1024], dtype="<i4")
    if header[0] != MODEL_MAGIC or header[1] != MODEL_VERSION_FP32:
        raise ValueError("%s: not an fp32 llm.c model file (magic %d version %d)"
                         % (path, header[0], header[1]))
    maxT, V, L, NH, C, Vp = (int(x) for x in header[2:8])
    cfg = dict(maxT=maxT, V=V, L=L, NH=NH, C=C, Vp=Vp)
    shapes = llmc_shapes(L, C, Vp, maxT)
    data = np.frombuffer(raw, dtype="<f4", offset=1024)
    need = sum(int(np.prod(s)) for s in shapes.values())
    if data.size != need:
        raise ValueError("%s: %d floats after the header, expected %d" % (path, data.size, need))
    out, off = {}, 0
    for name in NAMES:
        n = int(np.prod(shapes[name]))
        out[name] = data[off:off + n].reshape(shapes[name]).copy()
        off += n
    out["wte"] = out["wte"][:V]
    return cfg, out


# ---- ct-parity batch files ---------------------------------------------------
def write_batch(path, inputs, targets):
    """int32 B, int32 T, then B*T int32 inputs, then B*T int32 targets."""
    B, T = inputs.shape
    with open(path, "wb") as f:
        f.write(struct.pack("<ii", B, T))
        f.write(np.asarray(inputs, dtype="<i4").tobytes())
        f.write(np.asarray(targets, dtype="<i4").tobytes())


def read_batch(path):
    raw = open(path, "rb").read()
    B, T = struct.unpack("<ii", raw[:8])
    a = np.frombuffer(raw, dtype="<i4", offset=8)
    assert a.size == 2 * B * T, "batch file size does not match its B, T"
    return a[:B * T].reshape(B, T).copy(), a[B * T:].reshape(B, T).copy()


# ---- optimisation, exactly as the ct-parity protocol states it -----------------
def lr_at(step, steps, lr, min_lr, warmup):
    """Linear warmup lr*(s+1)/W for s < W, then cosine from lr to min_lr over N-W steps."""
    if step < warmup:
        return lr * (step + 1) / warmup
    decay = steps - warmup
    if decay <= 1:
        return lr
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * (step - warmup) / decay))


def global_grad_norm(params):
    return torch.sqrt(sum((p.grad.double() ** 2).sum() for p in params)).item()


class AdamW:
    """AdamW written out: m, v; bias corrections 1-beta^t (t = step+1);
    p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p), wd only on flagged (2-D) params."""

    def __init__(self, flagged, beta1, beta2, eps, weight_decay):
        self.flagged = flagged
        self.b1, self.b2, self.eps, self.wd = beta1, beta2, eps, weight_decay
        self.m = [torch.zeros_like(p) for p, _ in flagged]
        self.v = [torch.zeros_like(p) for p, _ in flagged]
        self.t = 0

    @torch.no_grad()
    def step(self, lr, grad_scale=1.0):
        self.t += 1
        bc1 = 1.0 - self.b1 ** self.t
        bc2 = 1.0 - self.b2 ** self.t
        for (p, decayed), m, v in zip(self.flagged, self.m, self.v):
            g = p.grad * grad_scale
            m.mul_(self.b1).add_(g, alpha=1.0 - self.b1)
            v.mul_(self.b2).addcmul_(g, g, value=1.0 - self.b2)
            upd = (m / bc1) / ((v / bc2).sqrt() + self.eps)
            if decayed:
                upd = upd + self.wd * p
            p.sub_(lr * upd)
