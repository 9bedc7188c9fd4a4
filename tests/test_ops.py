"""The compute seam (qwen3tts/ops): every available backend of every op against the op's torch
reference (ops/reference.py) on random inputs; the plan chosen from the options; model and codec
files that name no backend."""

from __future__ import annotations

import ast
import logging
import math
import os
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")  # before any triton import: the Triton backend runs on CPU tensors

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import qwen3tts
from conftest import max_abs
from qwen3tts import ops, options
from qwen3tts.ops import reference as R
from qwen3tts.ops import w8f_backend
from qwen3tts.ops.plan import OPTIONAL

ROOT = Path(qwen3tts.__file__).resolve().parent
G = torch.Generator().manual_seed(0)


def rnd(*shape):
    return torch.randn(*shape, generator=G)


def rel(y, ref) -> float:
    return max_abs(y, ref) / max(ref.abs().max().item(), 1.0)


def cl_weight(w):
    """The same values kept as (Cout, k, Cin) in memory (a channels-last layer's weight)."""
    return w.unsqueeze(2).contiguous(memory_format=torch.channels_last).squeeze(2)


def cl_input(B, C, L):
    return rnd(B, L, C).transpose(1, 2)  # (B, C, L) over (B, L, C) memory


def plans():
    """Every backend this machine has, each in a plan: the CPU float32 plan, and Triton under its
    interpreter where it imports."""
    o = options.current()
    out = [ops.make(o.replace(native="auto", onednn=True, winograd=True, kernels="auto"))]
    try:
        import triton  # noqa: F401
    except ImportError:
        return out
    if o.triton_interpret:
        out.append(ops.make(o.replace(kernels="triton")))
    return out


def backends(op):
    """(plan, backend name, function) for every available backend of `op`."""
    seen = set()
    for p in plans():
        for name, fn in zip(p.chain(op), p.fns[op]):
            if name not in seen:
                seen.add(name)
                yield p, name, fn


# ------------------------------------------------------------------ backends against the reference
def test_linear_every_backend_every_row_count():
    names = set()
    for p, name, fn in backends("linear"):
        names.add(name)
        for K, N, bias in [(64, 48, True), (100, 37, False), (256, 512, True)]:
            w, b = rnd(N, K) / math.sqrt(K), rnd(N) if bias else None
            for M in (1, 2, 3, 7, 24, 25, 64, 129, 257):
                x = rnd(M, K)
                y = fn(p, nn.Module(), x, w, b)
                assert y is not None and y.shape == (M, N) and rel(y, R.linear(x.double(), w.double(), None if b is None else b.double())) < 2e-6, (name, M)
            x3 = rnd(3, 5, K).transpose(0, 1)  # (5, 3, K), not contiguous
            assert rel(fn(p, nn.Module(), x3, w, b), R.linear(x3, w, b)) < 2e-6
    assert {"torch"} <= names


def test_gemm_every_backend_and_what_each_serves():
    served = {}
    for p, name, fn in backends("gemm"):
        for K, N, bias in [(96, 96, True), (300, 77, False), (40, 12, True)]:
            w, b = rnd(N, K) / math.sqrt(K), rnd(N) if bias else None
            owner = nn.Module()
            for M in (1, 2, 5, 24, 25, 33, 257):
                x = rnd(M, K)
                y = fn(p, owner, x, w, b)
                if y is None:
                    continue
                served.setdefault(name, set()).add(M)
                assert y.shape == (M, N) and rel(y, R.linear(x.double(), w.double(), None if b is None else b.double())) < 2e-6, (name, M)
    assert served["torch"] == {1, 2, 5, 24, 25, 33, 257}
    if "native" in served:
        assert served["native"] == {2, 5, 24}  # 2..24 rows
    if "onednn" in served:
        assert served["onednn"] == {1, 2, 5, 24, 25, 33, 257}


CONVS = [  # (B, Cin, Cout, k, dilation, stride, groups, L)
    (2, 96, 96, 7, 3, 1, 1, 300),  # Winograd
    (1, 128, 112, 7, 1, 1, 1, 100),  # Winograd
    (2, 48, 32, 3, 1, 1, 1, 40),  # one GEMM
    (1, 64, 64, 1, 1, 1, 1, 50),  # 1x1
    (1, 32, 24, 4, 1, 2, 1, 41),  # strided
    (1, 48, 48, 7, 1, 1, 48, 60),  # depthwise
    (2, 40, 40, 7, 2, 1, 40, 33),  # depthwise, dilated, channels not a multiple of the lanes
    (1, 16, 8, 7, 9, 1, 1, 1 << 14),  # long: beyond one GEMM
]


def test_conv1d_every_backend():
    served = {}
    for p, name, fn in backends("conv1d"):
        for B, cin, cout, k, d, s, g, L in CONVS:
            w = rnd(cout, cin // g, k) / math.sqrt(k * cin // g)
            b = rnd(cout)
            x = cl_input(B, cin, L)
            ref = R.conv1d(x.double(), w.double(), b.double(), s, d, g)
            for cl in (True, False):
                y = fn(p, nn.Module(), x, cl_weight(w) if cl else w, b, s, d, g, cl)
                if y is None:
                    continue
                served.setdefault(name, set()).add((cin, k, g, L, cl))
                assert y.shape == ref.shape and rel(y, ref) < 2e-5, (name, cin, k, d, g, L, cl)
    assert len(served["torch"]) == 2 * len(CONVS)
    if "winograd" in served:
        assert served["winograd"] == {(96, 7, 1, 300, True), (128, 7, 1, 100, True)}
    # one GEMM: channels-last layers without groups whose unfolded input is small enough
    assert served["gemm"] == {(96, 7, 1, 300, True), (128, 7, 1, 100, True), (48, 3, 1, 40, True), (64, 1, 1, 50, True), (32, 4, 1, 41, True)}
    if "native" in served:  # channels-last depthwise layers
        assert served["native"] == {(48, 7, 48, 60, True), (40, 7, 40, 33, True)}


def test_conv1d_history_reads_the_history_in_place():
    names = [n for _, n, _ in backends("conv1d_history")]
    for p, name, fn in backends("conv1d_history"):
        if name == "w8f":  # serves only the int8 weights it keeps (test_w8f_serves_the_weights_it_keeps)
            assert fn(p, nn.Module(), cl_input(1, 96, 8), rnd(1, 6, 96), cl_weight(rnd(96, 96, 7)), None, 1, 1) is None
            continue
        if name == "native":  # depthwise layers only (test_depthwise_history_step_equals_one_pass)
            assert fn(p, nn.Module(), cl_input(1, 96, 8), rnd(1, 6, 96), cl_weight(rnd(96, 96, 7)), None, 1, 1) is None
            continue
        for B, C, cout, d, N in [(2, 96, 96, 3, 40), (1, 128, 96, 1, 64), (3, 96, 112, 9, 36)]:
            w, b = rnd(cout, C, 7) / math.sqrt(7 * C), rnd(cout)
            hist = rnd(B, 6 * d, C)
            x = cl_input(B, C, N)
            y = fn(p, nn.Module(), x, hist, cl_weight(w), b, d, 1)
            ref = R.conv1d(torch.cat([hist.transpose(1, 2), x], dim=-1).double(), w.double(), b.double(), 1, d)
            assert y is not None and rel(y, ref) < 2e-5, (name, C, d, N)
        assert fn(p, nn.Module(), cl_input(1, 96, 64), rnd(1, 6, 96), cl_weight(rnd(96, 1, 7)), None, 1, 96) is None  # depthwise: declined
        assert fn(p, nn.Module(), cl_input(1, 96, 8), rnd(1, 6, 96), cl_weight(rnd(96, 96, 7)), None, 1, 1) is None  # 2 rows: weight-bound, declined
    assert names in ([], ["w8f"], ["w8f", "winograd"], ["w8f", "native"], ["w8f", "winograd", "native"])


def test_depthwise_history_step_equals_one_pass():
    """The native depthwise convolution (ConvNeXt's k7): a streaming step reading its history in
    place equals the reference, and steps of 1, 2 and 5 rows give the one-pass result bit for bit
    (each output's taps in one order, wherever its chunk starts)."""
    p = next((p for p in plans() if "native" in p.chain("conv1d_history")), None)
    if p is None:
        pytest.skip("no native library")
    for B, C, d, bias in [(1, 1024, 1, True), (2, 45, 2, False)]:
        w, b = cl_weight(rnd(C, 1, 7)), rnd(C) if bias else None
        P, L = 6 * d, 24
        x = cl_input(B, C, L)
        owner = nn.Module()
        ref = R.conv1d(torch.cat([torch.zeros(B, C, P), x], dim=-1).double(), w.double(), None if b is None else b.double(), 1, d, C)
        one = p.run("conv1d_history", owner, x, torch.zeros(B, P, C), w, b, d, C)
        assert one is not None and rel(one, ref) < 2e-6
        hist, outs, t = torch.zeros(B, P, C), [], 0
        for n in (1, 2, 5, 16):
            xs = x[..., t : t + n]
            outs.append(p.run("conv1d_history", owner, xs, hist, w, b, d, C))
            hist.copy_(torch.cat([hist, xs.transpose(1, 2)], dim=1)[:, -P:])
            t += n
        assert torch.equal(torch.cat(outs, dim=-1), one)


def test_overlap_add_every_backend():
    """A transposed convolution's output from its product (`overlap_add`): chunk by chunk with the
    carried tail, the reference transposed convolution; the chunks give the one-pass output bit
    for bit (the same additions per sample wherever a chunk starts)."""
    names = []
    for p, name, fn in backends("overlap_add"):
        names.append(name)
        for B, cin, C, k, s in [(1, 64, 96, 16, 8), (2, 24, 37, 10, 5), (1, 16, 8, 3, 2)]:
            w, b = rnd(cin, C, k), rnd(C)
            L = 13
            x = rnd(B, cin, L)
            z = (x.transpose(1, 2) @ w.permute(0, 2, 1).reshape(cin, k * C)).view(B, L, k, C)  # (B, L, k, C)
            ref = R.conv_transpose1d(x.double(), w.double(), b.double(), s)[..., : L * s]

            def run(cuts):
                tail, outs, t = torch.zeros(B, k - s, C).transpose(1, 2), [], 0  # (B, C, k - s) over (B, k - s, C)
                for n in cuts:
                    outs.append(fn(p, z[:, t : t + n].contiguous(), tail, b, s))
                    t += n
                return torch.cat(outs, dim=-1), tail

            one, tail = run([L])
            assert one.shape == ref.shape and rel(one, ref) < 1e-5, (name, C, k, s)
            assert torch.equal(tail.transpose(1, 2), z[:, -1, s:])  # the spill past the last sample
            assert torch.equal(run([1, 2, 4, 6])[0], one)
        assert fn(p, rnd(1, 3, 4, 8), torch.zeros(1, 8, 0), None, 4) is None  # k = s: no tail, nothing to add (declined)
    assert names in ([], ["native"])


def test_w8f_serves_the_weights_it_keeps():
    """An owner given int8 weights (`ops.keep_int8`): gemm, conv1d and its streaming form are its
    int8 product (the reference on the dequantized weight); every other owner is passed on."""
    p = ops.make(options.current().replace(native="auto"))
    if "w8f" not in p.chain("gemm"):
        pytest.skip("no w8f backend in this plan")
    lin = ops.Linear(96, 40)
    ops.bind(lin, p, packed=True)
    assert ops.keep_int8(lin, lin) == 96 * 40 and lin.weight.is_meta
    wq = lin.__dict__["_w8f"].dequantized()
    x = rnd(5, 96)
    assert rel(p.run("gemm", lin, x, lin.weight, lin.bias), R.linear(x.double(), wq.double(), lin.bias.double())) < 2e-6
    x3 = rnd(2, 3, 96)
    assert rel(lin(x3), R.linear(x3.double(), wq.double(), lin.bias.double())) < 2e-6  # the module's own path, leading dims kept
    for B, cin, cout, k, d, s, N in [(2, 48, 32, 3, 2, 1, 20), (1, 32, 24, 7, 1, 1, 9), (1, 16, 8, 4, 1, 2, 21)]:
        conv = nn.Conv1d(cin, cout, k)
        owner = nn.Module()
        ops.bind(owner, p)
        w = cl_weight(conv.weight.detach())
        conv.weight.data = w
        assert ops.keep_int8(owner, conv, lambda t: t.permute(0, 2, 1).reshape(t.shape[0], -1)) == w.numel()
        wq = owner.__dict__["_w8f"].dequantized().reshape(cout, k, cin).permute(0, 2, 1)  # (Cout, Cin, k)
        x = cl_input(B, cin, N)
        ref = R.conv1d(x.double(), wq.double(), conv.bias.double(), s, d)
        y = ops.conv1d(owner, x, conv.weight, conv.bias, s, d, 1, True)
        assert y.shape == ref.shape and rel(y, ref) < 2e-6
        if s == 1:
            hist = rnd(B, (k - 1) * d, cin)
            ref = R.conv1d(torch.cat([hist.transpose(1, 2), x], dim=-1).double(), wq.double(), conv.bias.double(), 1, d)
            assert rel(ops.conv1d_history(owner, x, hist, conv.weight, conv.bias, d, 1), ref) < 2e-6
            # a fused form of the optional op (more operands) ends the chain: no later backend reads the stand-in
            assert p.run("conv1d_history", owner, x, hist, conv.weight, conv.bias, d, 1, ("fused",)) is None
    assert w8f_backend.OPS["conv_transpose1d"](p, lin) is p.STOP and w8f_backend.OPS["conv_transpose1d"](p, nn.Module()) is None


def test_snake_every_backend_both_layouts():
    for p, name, fn in backends("snake"):
        for B, C, T in [(1, 96, 50), (2, 7, 33)]:
            alpha, inv_beta = torch.exp(rnd(C) * 0.3), 1 / (torch.exp(rnd(C) * 0.3) + 1e-9)
            for x in (rnd(B, C, T) * 3, cl_input(B, C, T) * 3):
                y = fn(p, x, alpha, inv_beta)
                assert y is not None and max_abs(y, R.snake(x, alpha, inv_beta)) < 1e-5, name
                assert y.stride() == x.stride()  # the same memory layout


def test_norm_rope_attention_every_backend():
    names = [n for _, n, _ in backends("rms_norm")]
    assert "torch" in names and ("triton" in names) == (len(plans()) > 1)  # Triton (interpreted) where it imports
    for p, name, fn in backends("rms_norm"):
        for shape, wshape in [((3, 5, 64), (64,)), ((2, 4, 3, 16), (3, 16))]:
            x, w = rnd(*shape), rnd(*wshape)
            assert max_abs(fn(p, x, w, 1e-6), R.rms_norm(x, w, 1e-6)) < 1e-5, name
    for p, name, fn in backends("rope"):
        x = rnd(2, 4, 6, 32)
        cos, sin = R.rope_tables(torch.arange(6)[None, None].expand(2, 1, 6), 32, 1e4, torch.float32)
        assert max_abs(fn(p, x, cos, sin), R.apply_rope(x, cos, sin)) < 1e-5, name
    for p, name, fn in backends("attention"):
        q, k, v = rnd(2, 8, 5, 16), rnd(2, 2, 9, 16), rnd(2, 2, 9, 16)
        mask = torch.rand(2, 1, 5, 9, generator=G) > 0.3
        mask[..., 0] = True
        assert max_abs(fn(p, q, k, v, mask, False, True), R.attention(q, k, v, mask, False, True)) < 1e-5, name
        q2 = rnd(1, 2, 9, 16)
        assert max_abs(fn(p, q2, k[:1], v[:1], None, True, False), R.attention(q2, k[:1], v[:1], None, True, False)) < 1e-5, name


# ------------------------------------------------------------------ the plan
def test_the_plan_follows_the_options_and_is_logged_once(caplog):
    o = options.current().replace(native="auto", onednn=True, winograd=True, kernels="torch", cc=f"plan-{id(caplog)}")
    with caplog.at_level(logging.INFO, logger="qwen3tts.ops"):
        p = ops.make(o)
        assert ops.make(o) is p  # once per (options, device, dtype)
    lines = [r.getMessage() for r in caplog.records if r.name == "qwen3tts.ops"]
    assert len(lines) == 1 and lines[0].startswith("ops plan for cpu float32: linear: ")
    assert p.chain("linear")[-1] == p.chain("gemm")[-1] == p.chain("conv1d")[-1] == p.chain("snake")[-1] == "torch"
    assert p.chain("rms_norm") == p.chain("rope") == p.chain("attention") == ("torch",)
    if "onednn" in p.chain("linear"):
        assert ops.make(o.replace(onednn=False)).chain("linear") == ("torch",)
    off = ops.make(o.replace(native="off"))
    assert "native" not in off.chain("gemm") + off.chain("conv1d") and "winograd" not in off.chain("conv1d") and off.chain("snake") == ("torch",) and off.lib is None
    if "winograd" in p.chain("conv1d"):
        assert ops.make(o.replace(winograd=False)).chain("conv1d") == ("w8f", "native", "gemm", "torch")
    assert p.chain("gemm")[0] == "w8f" and p.leads("gemm") == p.chain("gemm")[1]  # w8f only serves the weights it keeps
    bf = ops.make(o, "cpu", torch.bfloat16)
    assert all(c[-1:] == ("torch",) and "onednn" not in c and "native" not in c for op, c in bf.chains.items() if op not in OPTIONAL)


def test_a_plan_reads_no_option_per_call():
    """The backends of a plan made with the native library and oneDNN keep computing after the
    options change: the options are read when a plan is made, never per call."""
    p = ops.make(options.current().replace(native="auto", onednn=True))
    if "native" not in p.chain("gemm"):
        pytest.skip("no native library here")
    fns = dict(zip(p.chain("gemm"), p.fns["gemm"]))
    w, b, x = rnd(12, 40), rnd(12), rnd(4, 40)
    with options.override(native="off", onednn=False):
        for name in ("native", "onednn"):
            if name in fns:
                y = fns[name](p, nn.Module(), x, w, b)
                assert y is not None and rel(y, R.linear(x.double(), w.double(), b.double())) < 2e-6, name


def test_models_are_bound_at_load(tiny_tts):
    talker, codec = tiny_tts.talker, tiny_tts.speech_tokenizer
    plans = {id(m.__dict__.get("ops_plan")) for root in (talker, codec.decoder, codec.encoder) for m in root.modules()}
    assert len(plans) == 1 and None not in {m.__dict__.get("ops_plan") for m in talker.modules()}
    assert all(m.ops_packed for m in codec.decoder.modules() if isinstance(m, ops.Linear))
    assert not any(m.ops_packed for m in talker.modules() if isinstance(m, ops.Linear))


# ------------------------------------------------------------------ model and codec name no backend
BACKEND_MODULES = ("qwen3tts.native", "qwen3tts.kernels", "qwen3tts.quant", "qwen3tts.int8", "qwen3tts.ops.")


def _imports(f: Path) -> list[str]:
    mod = ".".join(f.relative_to(ROOT.parent).with_suffix("").parts)
    pkg = mod.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = pkg
            for _ in range(max(node.level - 1, 0)):
                base = base.rpartition(".")[0]
            m = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
            out += [f"{m}.{a.name}" for a in node.names]
    return out


def test_model_and_codec_import_no_backend():
    found = {}
    for sub in ("model", "codec"):
        for f in sorted((ROOT / sub).glob("*.py")):
            if f.name == "winograd.py":  # the Winograd math itself (its matrices and pieces)
                continue
            bad = [m for m in _imports(f) if m.startswith(BACKEND_MODULES) or m.endswith((".dnn", ".winograd")) or "qwen3tts.ops." in m]
            if bad:
                found[f"{sub}/{f.name}"] = bad
    assert found == {}
    assert _imports(ROOT / "codec" / "layers.py").count("qwen3tts.ops") == 1  # they call the seam
    assert any(m.startswith("qwen3tts.native") for m in _imports(ROOT / "ops" / "native_backend.py"))  # the scan sees imports


@pytest.mark.parametrize("module", ["qwen3tts.ops", "qwen3tts.model.layers", "qwen3tts.model.talker", "qwen3tts.codec.layers",
                                    "qwen3tts.codec.transformer", "qwen3tts.quant", "qwen3tts.native.stack", "qwen3tts.codec_quant",
                                    "qwen3tts.ops.w8f_backend"])
def test_each_side_of_the_seam_imports_first(module):
    """The seam and the modules that call it import in any order (a fresh interpreter each)."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120, cwd=ROOT.parent)
    assert r.returncode == 0, r.stderr[-2000:]
