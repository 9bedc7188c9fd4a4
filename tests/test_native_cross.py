"""The native kernels on aarch64, under emulation: the library's sources cross-compiled with
Debian's gcc-aarch64-linux-gnu (as a shared library, and as tests/native_harness.c, which runs
the kernels on inputs written here under every instruction set the emulated CPU has: neon and
portable) and run by qemu-user; the outputs are checked against torch on this host. Skips, and
says why, where the tools are missing (.ci/run installs them when it can)."""

from __future__ import annotations

import math
import platform
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from native_isas import int8_rows, q4_reference
from qwen3tts import native, options
from qwen3tts.codec import winograd
from qwen3tts.native.q4 import pack
from qwen3tts.native.stack import pack_rows

ROOT = Path(__file__).resolve().parent.parent
CC, QEMU, SYSROOT = "aarch64-linux-gnu-gcc", "qemu-aarch64", Path("/usr/aarch64-linux-gnu")
MISSING = [t for t in (CC, QEMU) if shutil.which(t) is None] + ([] if SYSROOT.is_dir() else [str(SYSROOT)])
pytestmark = pytest.mark.skipif(bool(MISSING) or platform.machine() == "aarch64",
                                reason=f"needs {', '.join(MISSING)} (apt-get install gcc-aarch64-linux-gnu qemu-user)" if MISSING
                                else "this host is aarch64: tests/test_native.py runs the kernels natively")

LM, LK, LKP, LN, LNP = 3, 100, 128, 37, 40  # LNP: LN padded to whole groups of rows
SR, SC = 5, 37
WL, WC, WCO, WD = 40, 12, 10, 2
WT = WL - 6 * WD
FM, FK, FN = 3, 40, 9
QM, QK, QKP, QN, QG = 5, 100, 128, 37, 32
CDIMS = dict(latent_dim=8, hidden_size=16, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
             head_dim=8, sliding_window=4, attention_bias=True)  # the harness's codec transformer (CL, CB, CN, ... there)
CB, CN, CR = 2, 3, 35


def test_the_shared_library_builds_for_aarch64(tmp_path, monkeypatch):
    monkeypatch.setenv("QWEN3TTS_CACHE", str(tmp_path))
    options.reload()
    so = native.build(cc=CC, machine="aarch64")
    head = so.read_bytes()[:20]
    assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 183  # EM_AARCH64
    syms = subprocess.run(["aarch64-linux-gnu-nm", "-D", "--defined-only", str(so)], capture_output=True, text=True).stdout
    for name in ("qwen3tts_linear", "qwen3tts_stack_decode", "qwen3tts_set_isa", "qwen3tts_abi", "qwen3tts_wino_fused"):
        assert f" T {name}\n" in syms
    assert "qwen3tts_linear_neon" not in syms  # the variants stay internal


def _write(d: Path, **arrays):
    for name, t in arrays.items():
        (d / name).write_bytes(t.contiguous().numpy().tobytes())


def _read(d: Path, name: str, isa: str, shape) -> torch.Tensor:
    return torch.frombuffer(bytearray((d / f"{name}_y_{isa}").read_bytes()), dtype=torch.float32).reshape(shape)


def test_kernels_under_qemu_equal_torch(tmp_path):
    src = ROOT / "qwen3tts" / "native"
    exe = tmp_path / "harness"
    cmd = [CC, "-O2", "-fopenmp", "-ffp-contract=off", "-std=gnu11", f"-I{src}", str(ROOT / "tests" / "native_harness.c"),
           *(str(src / n) for n in native.UNITS["aarch64"]), "-o", str(exe), "-lm"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    g = torch.Generator().manual_seed(0)
    # w8a8 linear: int8 weights (rows padded to 128 with zeros, packed in groups) incl. +-127 pairs, rows of any scale
    w = torch.randint(-127, 128, (LN, LK), generator=g, dtype=torch.int8)
    w[:, :8] = torch.tensor([127, -127] * 4, dtype=torch.int8)
    wp = pack_rows(w, LKP)
    assert wp.numel() == LNP * LKP
    scale, bias = torch.rand(LN, generator=g) * 0.01 + 1e-3, torch.randn(LN, generator=g)
    x = torch.randn(LM, LK, generator=g) * torch.tensor([1e-3, 1.0, 1e3])[:, None]
    x[0, :8] = torch.tensor([1.0, -1.0] * 4) * x[0].abs().max() * 2
    sn_x = torch.randn(SR, SC, generator=g) * 3
    sn_x[0, :2] = torch.tensor([1e5, -3e4])
    sn_a, sn_ib = torch.rand(SC, generator=g) + 0.5, torch.rand(SC, generator=g)
    cw = torch.randn(WCO, WC, 7, generator=g) / math.sqrt(7 * WC)
    cb, cx = torch.randn(WCO, generator=g) * 0.1, torch.randn(WL, WC, generator=g)
    AT, _, BT = winograd._mats(4, 7)
    lf_x, lf_w, lf_b = torch.randn(FM, FK, generator=g), torch.randn(FN, FK, generator=g), torch.randn(FN, generator=g)
    q4_in, q4_case = _q4_inputs(g)
    cs_case = _codec_stack_inputs(tmp_path, g)
    _write(tmp_path, lin_w=wp, lin_scale=scale, lin_wsum=w.to(torch.int32).sum(1).to(torch.int32), lin_bias=bias, lin_x=x,
           sn_x=sn_x, sn_a=sn_a, sn_ib=sn_ib, wi_x=cx, wi_U=winograd.transform_weight(cw), wi_BT=BT.float(), wi_AT=AT.float(),
           wi_b=cb, lf_x=lf_x, lf_w=lf_w, lf_b=lf_b, **q4_in)
    r = subprocess.run([QEMU, "-L", str(SYSROOT), str(exe), str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ["portable", "neon"]  # every set of the emulated CPU ran
    # the references (float64 where the kernels' own float32 steps allow)
    s = x.abs().amax(-1, keepdim=True)
    xq = torch.round(x * (127.0 / s)).clamp(-127, 127).long()  # the float32 product, as the C code
    lin_ref = (xq @ w.long().T).double() * (s.double() / 127) * scale.double() + bias.double()
    sin = torch.sin((sn_x * sn_a).double())
    sn_ref = sn_x.double() + sn_ib.double() * sin * sin
    wi_ref = F.conv1d(cx.T[None].double(), cw.double(), cb.double(), dilation=WD)[0].T  # (T, Cout)
    lf_ref = lf_x.double() @ lf_w.double().T + lf_b.double()
    outs = {}
    for isa in ("portable", "neon"):
        lin, sn = _read(tmp_path, "lin", isa, (LM, LN)), _read(tmp_path, "sn", isa, (SR, SC))
        wi, lf = _read(tmp_path, "wi", isa, (WT, WCO)), _read(tmp_path, "lf", isa, (FM, FN))
        for rr in range(LM):
            assert (lin[rr].double() - lin_ref[rr]).abs().max().item() <= 2e-6 * lin_ref[rr].abs().max().item(), (isa, rr)
        assert ((sn.double() - sn_ref).abs() / (sn_ref.abs() + 1)).max().item() < 1e-6, isa
        assert (wi.double() - wi_ref).abs().max().item() < 4e-5 * max(wi_ref.abs().max().item(), 1.0), isa
        assert (lf.double() - lf_ref).abs().max().item() < 1e-5, isa
        outs[isa] = (lin, sn, wi, lf)
    assert torch.equal(outs["neon"][0], outs["portable"][0])  # exact int32 sums, the same epilogue
    assert torch.equal(outs["neon"][2], outs["portable"][2])  # the same transform operations
    _check_q4(tmp_path, *q4_case)
    _check_codec_stack(tmp_path, *cs_case)


def _q4_inputs(g) -> tuple[dict, tuple]:
    """The w4a8 case (q4.c): int4 weights incl. a row of +7 against a row of +127 activations
    (the largest partial sums), padded inputs, bfloat16 group scales, a bias; (the harness's
    inputs, (weights, scales, int8 activations) for the check)."""
    q = torch.randint(-7, 8, (QN, QKP), generator=g)
    q[0], q[:, QK:] = 7, 0
    s = (torch.rand(QN, QKP // QG, generator=g) * 0.01 + 1e-4).to(torch.bfloat16).float()
    packed, scales = pack(q.to(torch.int8), s)
    xq = torch.randint(-127, 128, (QM, QKP), generator=g)
    xq[0], xq[:, QK:] = 127, 0
    x = torch.randn(QM, QK, generator=g) * torch.tensor([1e-3, 1.0, 30.0, 1e3, 2.0])[:, None]
    return dict(q4_w=packed, q4_s=scales.view(torch.int16), q4_bias=torch.randn(QN, generator=g), q4_xq=xq.to(torch.int8),
                q4_sx=torch.rand(QM, generator=g) * 0.1 + 1e-3, q4_x=x), (q, s, xq)


def _check_q4(d: Path, q, s, xq):
    qg, sd = q.reshape(QN, QKP // QG, QG), s.double()
    read = lambda name: torch.frombuffer(bytearray((d / name).read_bytes()), dtype=torch.float32)  # noqa: E731
    bias, sx, x = read("q4_bias").double(), read("q4_sx"), read("q4_x").reshape(QM, QK)
    x8, sx8 = int8_rows(x)
    refs = {"q4g": q4_reference(qg, sd, xq, sx.double()[:, None]) + bias,
            "q4l": q4_reference(qg, sd, F.pad(x8, (0, QKP - QK)), sx8) + bias}
    for case, ref in refs.items():
        ys = {isa: _read(d, case, isa, (QM, QN)) for isa in ("portable", "neon")}
        for isa, y in ys.items():
            for rr in range(QM):
                assert (y[rr].double() - ref[rr]).abs().max().item() <= 2e-6 * ref[rr].abs().max().item(), (case, isa, rr)
        assert torch.equal(ys["neon"], ys["portable"])  # exact int32 sums, the same float steps


def _codec_stack_inputs(d: Path, g) -> tuple:
    """The codec transformer pass (rows.c qwen3tts_codec_stack) of a tiny w8a8 transformer with
    grouped key / value heads and biases, two rows at their own positions over rings of earlier
    keys: its table as offsets into one int8 and one float blob (the harness makes them pointers),
    the inputs, and the torch layers' outputs and rings (tests/test_codec_stack.py's oracle)."""
    from test_codec_stack import _layers_as_ops, _state, _transformer

    from qwen3tts.codec.layers import StreamState
    from qwen3tts.native import codec_stack

    tr = _transformer(True, **CDIMS)
    table = codec_stack.CodecStack(tr, CR).table.tolist()
    tensors = {p.data_ptr(): p.detach() for p in tr.parameters() if not p.is_meta}  # norms, layer scales, biases
    for m in tr.modules():
        q = m.__dict__.get(codec_stack.SLOT)
        if q is not None:
            tensors[q.weight_q.data_ptr()], tensors[q.scales.data_ptr()] = q.weight_q, q.scales
    at, blobs = {}, {torch.int8: [], torch.float32: []}
    for ptr, t in tensors.items():
        at[ptr] = sum(x.numel() for x in blobs[t.dtype])
        blobs[t.dtype].append(t.reshape(-1))
    lds = {2, 6, 12, 16, 101, 106}  # rows.c CS_*_LD: row strides, not pointers
    enc = [v if (i % 20 if i < 40 else i - 40 + 100) in lds else -1 if v == 0 else at[v] for i, v in enumerate(table)]
    pos = [5, 40]
    st = _state(tr, CB)
    for ts in st.bufs.values():
        for t in ts:
            t.copy_(torch.randn(t.shape, generator=g))
    x = torch.randn(CB, CN, CDIMS["latent_dim"], generator=g)
    cos, sin = tr._rope_rows(pos, CN, "cpu", torch.float32)  # (B, N, D)
    rings = torch.cat([t.reshape(-1) for layer in tr.layers for t in st.bufs[layer.self_attn.state_key]])
    _write(d, cs_sizes=torch.tensor([sum(x.numel() for x in blobs[torch.int8]), sum(x.numel() for x in blobs[torch.float32])]),
           cs_table=torch.tensor(enc), cs_w8=torch.cat(blobs[torch.int8]), cs_f=torch.cat(blobs[torch.float32]), cs_x=x,
           cs_cos=cos, cs_sin=sin, cs_rings=rings, cs_pos=torch.tensor(pos))
    refs, ref_rings = [], []
    with torch.inference_mode():
        rows = []
        for b in range(CB):
            row = StreamState({k: [t[b : b + 1].clone() for t in ts] for k, ts in st.bufs.items()})
            row.pos = pos[b]
            refs.append(_layers_as_ops(tr, x[b : b + 1], row))
            rows.append(row)
    for layer in tr.layers:
        for i in range(2):
            ref_rings.append(torch.cat([row.bufs[layer.self_attn.state_key][i] for row in rows]).reshape(-1))
    return torch.cat(refs), torch.cat(ref_rings)


def _check_codec_stack(d: Path, ref: torch.Tensor, ref_rings: torch.Tensor) -> None:
    for isa in ("portable", "neon"):
        y = _read(d, "cs", isa, ref.shape)
        assert (y - ref).abs().max().item() <= 1e-5 * ref.abs().max().item(), isa
        rings = _read(d, "csr", isa, ref_rings.shape)
        assert (rings - ref_rings).abs().max().item() <= 1e-5 * ref_rings.abs().max().item(), isa
