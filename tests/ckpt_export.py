#!/usr/bin/env python3
"""The safetensors export of a checkpoint is GPT-2 in Hugging Face's names and layouts.

usage: ckpt_export.py BIN_DIR

Trains a small GPT (odd sizes: C = 24, 3 heads, V = 67) for 4 steps with a checkpoint at the
end, exports it with `ctrain ckpt export` as safetensors and as an llm.c file, and computes the
logits of one batch (B = 3, T = 11) three ways:
  - ctrain's forward (ct-parity --steps 0 on the llm.c export, which equals final.bin: see
    tests/ckpt_tools.py);
  - from the safetensors file: transformers' GPT2LMHeadModel (load_state_dict; only
    lm_head.weight and the attention mask buffers may be missing, none unexpected; the head is
    tied) when transformers and safetensors are importable, else a GPT-2 written here in torch
    that reads the file with the standard library and uses HF's names and Conv1D layout
    (x @ W + b with W (in, out)).
Asserts max|a - b| / max|b| <= 1e-5 between ctrain's and the safetensors model's logits, the
parity test's tolerance for one fp32 forward pass (only the rounding order differs, ~1e-6). A
transposed or misnamed tensor gives errors of order 1.

Exit 0 = pass, 1 = fail, 77 = skipped (torch not importable by python3 or /usr/bin/python3).
"""
import json
import math
import os
import shutil
import struct
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "scripts"))
import torch_gpt as tg  # noqa: E402  (re-executes with a python that has torch, or exits 77)
sys.path.insert(0, HERE)
from mpi_equivalence import model_section, run as must, synth_data  # noqa: E402  (must: exits 1 if it fails)
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

MODEL = dict(n_layer=2, n_head=3, n_embd=24, vocab_size=67, seq_len=16)
B, T = 3, 11
TOL = 1e-5


def job_text(data, run_dir):
    return f"""
{model_section(MODEL)}[data]
train = "{data}/train_*.bin"
[train]
batch_size = 2
steps = 4
lr = 1e-2
warmup_steps = 0
seed = 11
[checkpoint]
resume = "never"
[log]
dir = "{run_dir}"
[device]
threads_per_rank = 1
"""


def read_safetensors(path):
    """name -> float32 array, with the standard library and numpy only."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        assert entry["dtype"] == "F32", (name, entry["dtype"])
        begin, end = entry["data_offsets"]
        out[name] = np.frombuffer(data[begin:end], dtype="<f4").reshape(entry["shape"])
    return out


def hand_built_logits(path, idx):
    """GPT-2 forward from HF-named tensors: Conv1D is x @ W + b with W (in, out)."""
    sd = {k: torch.from_numpy(v.copy()) for k, v in read_safetensors(path).items()}
    L, NH, C = MODEL["n_layer"], MODEL["n_head"], MODEL["n_embd"]
    expected = {"transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight",
                "transformer.ln_f.bias"}
    for i in range(L):
        for part in ["ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"]:
            expected |= {f"transformer.h.{i}.{part}.weight", f"transformer.h.{i}.{part}.bias"}
    assert set(sd) == expected, set(sd) ^ expected

    def p(name):
        return sd["transformer." + name]

    def ln(x, name):
        return F.layer_norm(x, (C,), p(name + ".weight"), p(name + ".bias"), 1e-5)

    def conv1d(x, name):
        return x @ p(name + ".weight") + p(name + ".bias")

    Tn = idx.shape[1]
    x = p("wte.weight")[idx] + p("wpe.weight")[:Tn]
    mask = torch.tril(torch.ones(Tn, Tn, dtype=torch.bool))
    for i in range(L):
        h = f"h.{i}."
        q, k, v = conv1d(ln(x, h + "ln_1"), h + "attn.c_attn").split(C, dim=2)
        q, k, v = (t.view(idx.shape[0], Tn, NH, C // NH).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(C // NH)
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(idx.shape[0], Tn, C)
        x = x + conv1d(y, h + "attn.c_proj")
        m = F.gelu(conv1d(ln(x, h + "ln_2"), h + "mlp.c_fc"), approximate="tanh")
        x = x + conv1d(m, h + "mlp.c_proj")
    return ln(x, "ln_f") @ p("wte.weight").t()


def transformers_logits(path, idx):
    """GPT2LMHeadModel with the file's tensors; None when transformers is not importable."""
    try:
        import safetensors.torch
        import transformers
    except ImportError:
        return None
    m = MODEL
    config = transformers.GPT2Config(
        n_layer=m["n_layer"], n_head=m["n_head"], n_embd=m["n_embd"],
        vocab_size=m["vocab_size"], n_positions=m["seq_len"], activation_function="gelu_new",
        layer_norm_epsilon=1e-5, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = transformers.GPT2LMHeadModel(config).eval()
    missing, unexpected = model.load_state_dict(safetensors.torch.load_file(path), strict=False)
    buffers = (".attn.bias", ".attn.masked_bias")
    assert not unexpected, unexpected
    assert all(k == "lm_head.weight" or k.endswith(buffers) for k in missing), missing
    model.tie_weights()
    with torch.no_grad():
        return model(idx).logits


def main():
    bin_dir = sys.argv[1]
    ctrain = os.path.join(bin_dir, "ctrain")
    work = tempfile.mkdtemp(prefix="ctrain_ckpt_export_")
    try:
        data = synth_data(ctrain, work, MODEL["vocab_size"], 4)
        run_dir = os.path.join(work, "run")
        job = os.path.join(work, "job.toml")
        with open(job, "w") as f:
            f.write(job_text(data, run_dir))
        must([ctrain, "train", job])
        st, llmc = os.path.join(work, "model.safetensors"), os.path.join(work, "model.bin")
        must([ctrain, "ckpt", "export", os.path.join(run_dir, "ckpt"), "--out", st])
        must([ctrain, "ckpt", "export", os.path.join(run_dir, "ckpt"), "--out", llmc])

        gen = torch.Generator().manual_seed(5)
        inputs = torch.randint(0, MODEL["vocab_size"], (B, T), generator=gen)
        batch, out = os.path.join(work, "batch.bin"), os.path.join(work, "out.bin")
        tg.write_batch(batch, inputs.numpy().astype(np.int32), inputs.numpy().astype(np.int32))
        must([os.path.join(bin_dir, "ct-parity"), "--model", llmc, "--batch", batch, "--out",
              out, "--steps", "0"])
        n = B * T * MODEL["vocab_size"]
        ours = np.fromfile(out, dtype="<f4")[1:1 + n].reshape(B, T, -1).astype(np.float64)

        theirs, how = transformers_logits(st, inputs), "transformers GPT2LMHeadModel"
        if theirs is None:
            theirs, how = hand_built_logits(st, inputs), "hand-built GPT-2 with HF names"
        theirs = theirs.double().numpy()
        err = float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))
        ok = err <= TOL
        print(f"{how}: logits max-rel error {err:.3e} (tolerance {TOL:.0e}) "
              f"{'ok' if ok else 'FAIL'}")
        return 0 if ok else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
