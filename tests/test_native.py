"""The native CPU decode library (qwen3tts/native): its w8a8 linear against an exact float64
model of its definition, per-row independence, whole decode steps of a stack against the same
layers run as torch ops (outputs, caches, greedy codes), and the build / fallback rules; every
instruction set the CPU runs (native_isas: avx512, avx2, portable on an AVX-512 host)."""

from __future__ import annotations

import ctypes
import platform

import pytest
import torch
import torch.nn as nn

from native_isas import fresh_library, isas, using, without_native  # noqa: F401 (fresh_library: an autouse fixture)
from qwen3tts import native, options
from qwen3tts.native.stack import NativeStack, NativeW8A8Linear, pack_rows, unpack_rows

ISAS = isas()


def _reference(q: NativeW8A8Linear, x: torch.Tensor) -> torch.Tensor:
    """decode.c's definition in float64: row scale s = max|x|, q = round(x * f32(127 / s)) in
    float32, exact integer products with the int8 weights, times s / 127 and the channel scales."""
    wq, ws = q.quantized_weight()
    x = x.float()
    s = x.abs().amax(-1, keepdim=True).clamp(min=1e-30)  # (M, 1)
    xq = torch.round(x * (127.0 / s)).clamp(-127, 127).long()  # float32 product, as the C code
    acc = (xq @ wq.long().T).double()  # exact
    return acc * (s.double() / 127) * ws.double()


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("k", [256, 100])  # a multiple of the 64-byte row and a padded one
def test_native_linear_is_per_row_int8(k, isa):
    torch.manual_seed(0)
    lin = nn.Linear(k, 96, bias=True)
    q = NativeW8A8Linear(lin)
    native.set_isa(isa)
    wq, ws = q.quantized_weight()
    assert wq.dtype == torch.int8 and wq.shape == (96, k)
    full = unpack_rows(q.weight_q, 96)  # (96, Kp): the inputs padded to a multiple of 64 with zeros
    assert full.shape[1] % 64 == 0 and torch.equal(full[:, :k], wq) and not full[:, k:].any()
    assert torch.equal(q.weight_q, pack_rows(wq, full.shape[1]))
    assert torch.allclose(ws, lin.weight.abs().amax(1) / 127, rtol=1e-6)
    w = wq.float() * ws[:, None]
    assert ((w - lin.weight).abs() <= 0.5 * ws[:, None] + 1e-7).all()  # round to nearest step
    x = torch.randn(7, k) * torch.tensor([1e-3, 1.0, 30.0, 1e3, 1.0, 0.5, 2.0])[:, None]
    with torch.inference_mode():
        got = q(x)
    want = _reference(q, x) + lin.bias.double()
    for r in range(7):
        scale = want[r].abs().max().item()
        assert (got[r].double() - want[r]).abs().max().item() <= 2e-6 * scale
    exact = (x @ lin.weight.T + lin.bias).detach()
    rel = ((got - exact).norm(dim=1) / (exact - lin.bias.detach()).norm(dim=1)).max().item()
    assert rel < 3e-2


@pytest.mark.parametrize("isa", ISAS)
def test_native_linear_rows_do_not_depend_on_the_batch(isa):
    torch.manual_seed(1)
    q = NativeW8A8Linear(nn.Linear(512, 320, bias=False))
    native.set_isa(isa)
    x = torch.randn(37, 512) * torch.linspace(0.01, 10.0, 37)[:, None]  # 37 rows: blocks of 4 and a tail
    with torch.inference_mode():
        together = q(x)
        for b in (0, 3, 4, 36):
            assert torch.equal(together[b], q(x[b : b + 1])[0])
        assert torch.equal(q(torch.zeros(2, 512)), torch.zeros(2, 320))  # all-zero rows stay zero
        assert q(x.to(torch.bfloat16)).dtype == torch.bfloat16


@pytest.fixture(scope="module")
def native_tts(tiny_tts):
    from qwen3tts import Qwen3TTS

    native.reset()
    tts = Qwen3TTS.from_pretrained(tiny_tts.path, quantize="w8a8")
    assert isinstance(tts.talker.model.native, NativeStack) and isinstance(tts.talker.code_predictor.model.native, NativeStack)
    return tts


@pytest.fixture(params=ISAS)
def isa(request):
    with using(request.param):
        yield request.param


def test_native_steps_equal_torch_ops_code_predictor(native_tts, isa):
    """The predictor's frame: a 2-token step at positions 0-1, then 1-token steps, batch 2."""
    torch.manual_seed(2)
    cp = native_tts.talker.code_predictor.model
    H = cp.cfg.hidden_size
    ca, cb = cp.new_cache(2, 16), cp.new_cache(2, 16)
    slots = torch.arange(16)
    with torch.inference_mode():
        for j, n in enumerate([2, 1, 1, 1]):
            x = torch.randn(2, n, H)
            pos = slots[:2] if j == 0 else slots[j + 1 : j + 2]
            got = cp(x, ca, pos, kv_len=j + 2)
            want = without_native(cp, lambda: cp(x, cb, pos, kv_len=j + 2))
            assert got.shape == want.shape == (2, n, H)
            assert (got - want).abs().max().item() <= 1e-4 * want.abs().max().item()
        for k, kk in zip(ca.k + ca.v, cb.k + cb.v):  # the same keys and values, in the same slots
            assert (k - kk).abs().max().item() <= 1e-4 * kk.abs().max().item()
            assert torch.equal(k[:, :, 5:], torch.zeros_like(k[:, :, 5:]))


def test_native_forward_rows_equals_torch_ops_talker(native_tts, isa):
    """Talker decode for two sessions at different positions, caches of different sizes."""
    torch.manual_seed(3)
    tr = native_tts.talker.model
    H = tr.cfg.hidden_size
    lens, caps = [9, 4], [24, 12]
    pair = []
    with torch.inference_mode():
        for _ in range(2):  # the same prefill twice (torch ops: longer than the native path)
            caches = [tr.new_cache(1, c) for c in caps]
            for c, L in zip(caches, lens):
                torch.manual_seed(L)
                tr(torch.randn(1, L, H), c, torch.arange(L), kv_len=L)
            pair.append(caches)
        pos = list(lens)
        for step in range(3):
            x = torch.randn(2, 1, H)
            got = tr.forward_rows(x, pair[0], pos)
            want = without_native(tr, lambda: tr.forward_rows(x, pair[1], pos))
            assert (got - want).abs().max().item() <= 1e-4 * want.abs().max().item()
            alone = tr.forward_rows(x[1:], [_clone_cache(pair[0][1])], pos[1:])  # slot pos[1] rewritten alike
            assert torch.equal(alone[0], got[1])  # a row's numbers do not depend on its batch
            pos = [p + 1 for p in pos]


def test_native_steps_refuse_positions_outside_the_cache(native_tts):
    cp, tk = native_tts.talker.code_predictor.model, native_tts.talker.model
    x = torch.zeros(1, 1, cp.cfg.hidden_size)
    with torch.inference_mode():
        with pytest.raises(ValueError, match="slots of the 16-slot cache"):
            cp(x, cp.new_cache(1, 16), torch.tensor([16]), kv_len=17)
        with pytest.raises(ValueError, match="inside that row's cache"):
            tk.forward_rows(torch.zeros(1, 1, tk.cfg.hidden_size), [tk.new_cache(1, 8)], [8])


def _clone_cache(c):
    from qwen3tts.model.layers import KVCache

    d = KVCache.__new__(KVCache)
    d.k, d.v, d.max_len = [t.clone() for t in c.k], [t.clone() for t in c.v], c.max_len
    return d


def test_native_greedy_codes_equal_torch_ops(native_tts, tiny_icl_voice, isa):
    """End to end, the native decode steps give the codes of the same layers run as torch ops."""
    kw = dict(language="English", do_sample=False, subtalker_dosample=False, max_new_tokens=20)
    tk, cp = native_tts.talker.model, native_tts.talker.code_predictor.model
    for text, voice in [("Hello there, how are you today?", tiny_icl_voice), ("Third.", None)]:
        got = native_tts.generate(text, voice=voice, **kw).codes
        want = without_native(tk, lambda: without_native(cp, lambda: native_tts.generate(text, voice=voice, **kw).codes))
        assert got.shape[0] > 3 and torch.equal(got, want)


# ------------------------------------------------------------------ build and fallback
def test_build_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("QWEN3TTS_CACHE", str(tmp_path))
    options.reload()
    first = native.build()
    assert first.parent == tmp_path / "native" and first.exists()
    stamp = first.stat().st_mtime_ns
    assert native.build() == first and first.stat().st_mtime_ns == stamp  # not rebuilt
    assert native.load().qwen3tts_native_version() == native.VERSION == 2


def test_abi_is_checked_at_load():
    lib = native.load()
    native.check_abi(lib)  # the ctypes structures match the C ones

    class BadLin(ctypes.Structure):  # bias and wsum swapped
        _fields_ = [("w", ctypes.c_void_p), ("scale", ctypes.c_void_p), ("bias", ctypes.c_void_p), ("wsum", ctypes.c_void_p),
                    ("n", ctypes.c_int32), ("k", ctypes.c_int32), ("kp", ctypes.c_int32), ("bits", ctypes.c_int32),
                    ("group", ctypes.c_int32)]

    fields = [(BadLin if st is native.Lin else st, f) for st, f in native.ABI_FIELDS]
    old, native.ABI_FIELDS = native.ABI_FIELDS, fields
    try:
        with pytest.raises(RuntimeError, match=r"ABI mismatch: offsetof\(BadLin, wsum\) is 16 in C, 24 in"):
            native.check_abi(lib)
        native.ABI_FIELDS = fields[:-1]
        with pytest.raises(RuntimeError, match="ABI mismatch: it reports 28 sizes / offsets, the loader knows 27"):
            native.check_abi(lib)
    finally:
        native.ABI_FIELDS = old


def test_isa_is_chosen_at_load_and_can_be_forced(monkeypatch):
    best = ISAS[0]
    assert native.isa() == best and ISAS[-1] == "portable"
    assert best == ("neon" if platform.machine() in ("aarch64", "arm64") else "avx512" if "avx512" in ISAS else best)
    for name in ISAS:
        native.reset()
        monkeypatch.setenv("QWEN3TTS_ISA", name)
        options.reload()
        assert native.isa() == name  # read once, when the library is loaded
    monkeypatch.setenv("QWEN3TTS_ISA", "auto")
    options.reload()
    assert native.isa() == ISAS[-1]  # not re-read per call
    native.reset()
    assert native.isa() == best
    assert native.set_isa("portable") == best and native.isa() == "portable"
    assert native.set_isa(None) == "portable" and native.isa() == best
    other = "avx512" if platform.machine() in ("aarch64", "arm64") else "neon"  # never on this architecture
    with pytest.raises(ValueError, match=f"isa={other}: this CPU cannot run it \\(it can: {', '.join(ISAS)}\\)"):
        native.set_isa(other)
    native.reset()
    with pytest.raises(ValueError, match="QWEN3TTS_ISA must be one of auto, portable, avx2, avx512, neon, not 'sse9'"):
        options.from_env({"QWEN3TTS_ISA": "sse9"})  # parsed once, with the other options


def test_no_compiler_falls_back_in_auto_and_raises_in_on(tmp_path, monkeypatch, tiny_tts):
    from qwen3tts.quant import W8A8Linear, linear_class

    monkeypatch.setenv("QWEN3TTS_CACHE", str(tmp_path))  # nothing cached there
    options.reload()
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    options.reload()
    with pytest.warns(RuntimeWarning, match="(?s)native CPU decode unavailable: compiling dispatch.c isa_.* with false failed.*falling back"):
        assert linear_class("w8a8", torch.float32) is W8A8Linear
    native.reset()
    monkeypatch.setenv("QWEN3TTS_NATIVE", "on")
    options.reload()
    with pytest.raises(RuntimeError, match="compiling dispatch.c isa_.* with false failed"):
        native.available()
    monkeypatch.setenv("QWEN3TTS_NATIVE", "off")
    options.reload()
    assert not native.available() and linear_class("w8a8", torch.float32) is W8A8Linear
    with pytest.raises(RuntimeError, match="switched off"):
        native.load()
    with pytest.raises(ValueError, match="QWEN3TTS_NATIVE must be one of auto, on, off"):
        options.from_env({"QWEN3TTS_NATIVE": "fast"})
    assert linear_class("w8a8", torch.bfloat16) is W8A8Linear  # the library is float32 only


# ------------------------------------------------------------------ codec: SnakeBeta
def test_native_snake_equals_float64_formula_and_torch_path(isa):
    from qwen3tts.codec.layers import SnakeBeta

    torch.manual_seed(4)
    for C in (96, 37):  # whole 16-lane vectors, and a scalar tail
        act = SnakeBeta(C)
        with torch.no_grad():
            act.alpha.normal_(0, 1)
            act.beta.normal_(0, 1)
        T = 300
        # magnitudes up to 3e4: past |x * alpha| > 8192 the lanes take libm's sinf
        xl = (torch.randn(2, T, C) * torch.logspace(-3, 4.5, T)[None, :, None]).contiguous()
        x = xl.transpose(1, 2)  # (B, C, T) over channels-last memory: the native path
        with torch.inference_mode():
            got = act(x)
            ncw = act(x.contiguous())  # NCW memory: the native NCW kernel
            torch_path = act(x[:, :, ::2])  # strided: the torch ops
        assert got.stride() == x.stride() and ncw.is_contiguous()
        a, ib = act._consts()  # float32 exp(alpha), 1 / (exp(beta) + 1e-9), as the module uses them
        s = torch.sin((x * a[None, :, None]).double())  # the float32 product, then sin exactly
        want = x.double() + ib.double()[None, :, None] * s * s

        def rel(y, w):
            return ((y.double() - w).abs() / (w.abs() + 1)).max().item()

        assert rel(got, want) < 1e-6 and rel(ncw, want) < 1e-6  # both layouts
        assert torch_path.shape == (2, C, T // 2) and rel(torch_path, want[:, :, ::2]) < 1e-6
        assert not torch.equal(got, x)  # it did something


def test_snake_constants_follow_the_parameters_and_inference_tensors():
    from qwen3tts.codec.layers import SnakeBeta

    act = SnakeBeta(16)
    x = torch.randn(1, 16, 40)
    with torch.inference_mode():
        before = act(x)
    with torch.no_grad():
        act.alpha.add_(0.5)  # an in-place update invalidates the cached exp(alpha)
    with torch.inference_mode():
        after = act(x)
        assert not torch.allclose(before, after)
        made = SnakeBeta(16)  # parameters created under inference mode have no version counter
        assert torch.equal(made(x), before)


def _each_isa(fn):
    """fn() under every instruction set, {isa: result}."""
    out = {}
    for name in ISAS:
        with using(name):
            out[name] = fn()
    return out


def test_every_isa_gives_the_same_linear_and_snake():
    """The linear bit for bit on every path (exact int32 sums, the same float epilogue); SnakeBeta
    bit for bit between AVX2 and AVX-512 (the same operations in 8 or 16 lanes), the portable
    libm path within rounding."""
    torch.manual_seed(5)
    for k, m in [(256, 1), (100, 5), (1024, 4), (3072, 3)]:
        lin = nn.Linear(k, 75, bias=True)  # 75 outputs: groups of 4 and a padded one
        with torch.no_grad():  # +-127 weights side by side (each row's largest magnitude)
            lin.weight[:, :8] = torch.tensor([1.0, -1.0, 1.0, -1.0, -1.0, 1.0, 1.0, -1.0])
        q = NativeW8A8Linear(lin)
        assert torch.equal(q.quantized_weight()[0][:, :8], torch.tensor([[127, -127, 127, -127, -127, 127, 127, -127]] * 75, dtype=torch.int8))
        x = (torch.randn(m, k) * torch.logspace(-2, 2, m)[:, None]).contiguous()
        x[0, :7] = torch.tensor([1e3, -1e3, 1e3, 1e3, -1e3, -1e3, 1e3])  # +-127 activations side by side

        def run(q=q, x=x, m=m):
            y = torch.empty(m, 75)
            native.load().qwen3tts_linear(ctypes.byref(q.desc), x.data_ptr(), m, y.data_ptr(), 1)
            return y

        ys = _each_isa(run)
        ref = _reference(q, x) + q.bias.double()
        for name, y in ys.items():
            assert torch.equal(y, ys[ISAS[0]]), name
            assert (y.double() - ref).abs().max().item() <= 2e-6 * y.abs().max().item()
    C, T = 40, 64
    x = torch.randn(1, T, C) * 3
    x[0, 0, :3] = torch.tensor([1e5, -3e4, 9e3])  # lanes past 8192: libm
    a, ib = torch.rand(C) + 0.5, torch.rand(C)

    def snake():
        y = torch.empty_like(x)
        native.load().qwen3tts_snake(x.data_ptr(), y.data_ptr(), a.data_ptr(), ib.data_ptr(), T, C, 1)
        return y

    outs = _each_isa(snake)
    s = torch.sin((x * a).double())
    want = x.double() + ib.double() * s * s
    for name, y in outs.items():
        assert ((y.double() - want).abs() / (want.abs() + 1)).max().item() < 1e-6, name
    if "avx2" in outs and "avx512" in outs:
        assert torch.equal(outs["avx2"], outs["avx512"])


def test_every_isa_gives_the_same_depthwise_conv_and_overlap_add():
    """qwen3tts_dwconv (one fused multiply-add per tap in tap order, fmaf in scalar lanes) and
    qwen3tts_overlap_add (the same additions per sample) give the same floats on every path; both
    against float64, with channels that leave a scalar tail (45) and a history read in place."""
    torch.manual_seed(6)
    B, C, k, d, P, L = 2, 45, 7, 2, 12, 9
    h, x = torch.randn(B, P, C), torch.randn(B, L, C)
    wt, b = torch.randn(k, C), torch.randn(C)
    T = P + L - (k - 1) * d

    def dw():
        y = torch.empty(B, T, C)
        native.load().qwen3tts_dwconv(h.data_ptr(), P, P * C, x.data_ptr(), L, L * C, B, C, wt.data_ptr(), k, d, b.data_ptr(),
                                      y.data_ptr(), 1)
        return y

    xx = torch.cat([h, x], dim=1).double()  # (B, P + L, C)
    want = sum(wt[j].double() * xx[:, j * d : j * d + T] for j in range(k)) + b.double()
    z, tail0 = torch.randn(B, 5, 10, C), torch.randn(B, 5, C)  # k = 10, s = 5

    def oa():
        tail, y = tail0.clone(), torch.empty(B, 25, C)
        native.load().qwen3tts_overlap_add(z.data_ptr(), B, 5, 10, 5, C, tail.data_ptr(), 5 * C, b.data_ptr(), y.data_ptr(), 1)
        return y, tail

    prev = torch.cat([tail0[:, None], z[:, :-1, 5:]], dim=1)  # (B, 5, 5, C): what spills into each block
    want_oa = ((z[:, :, :5] + prev).double() + b.double()).reshape(B, 25, C)
    outs, oas = _each_isa(dw), _each_isa(oa)
    for name in outs:
        assert torch.equal(outs[name], outs[ISAS[0]]) and (outs[name].double() - want).abs().max().item() < 1e-5, name
        y, tail = oas[name]
        assert torch.equal(y, oas[ISAS[0]][0]) and (y.double() - want_oa).abs().max().item() < 1e-5, name
        assert torch.equal(tail, z[:, -1, 5:])


def test_int8_products_at_the_extremes_are_exact_on_every_isa():
    """Every sign pattern of +-127 activations against +-127 weights over long rows, zero and tiny
    rows among them, 1..7 and 54 rows (the AVX2 path's pairs of rows and its odd last row): the
    largest int16 pair sums of each path stay exact (AVX2 multiplies |x| by w or ~w = -w - 1,
    up to 2 x 127 x 128 a pair), so every path gives the exact float64 reference and the same
    floats."""
    K, N = 3072, 12
    g = torch.Generator().manual_seed(11)
    signs = [torch.ones(K), -torch.ones(K), torch.tensor([1.0, -1.0]).repeat(K // 2), torch.tensor([-1.0, -1.0, 1.0, 1.0]).repeat(K // 4)]
    w = torch.stack(signs + [torch.randint(0, 2, (K,), generator=g).float() * 2 - 1 for _ in range(N - len(signs))])
    lin = nn.Linear(K, N, bias=False)
    with torch.no_grad():
        lin.weight.copy_(w)
    q = NativeW8A8Linear(lin)
    assert q.quantized_weight()[0].abs().eq(127).all()
    rows = [*(s * 3.0 for s in signs), torch.zeros(K), torch.full((K,), 1e-20), torch.randint(0, 2, (K,), generator=g).float() - 0.5]
    for m in (1, 2, 3, 4, 5, 7, 54):
        x = torch.stack([rows[i % len(rows)] for i in range(m)]).contiguous()

        def run(x=x, m=m):
            y = torch.empty(m, N)
            native.load().qwen3tts_linear(ctypes.byref(q.desc), x.data_ptr(), m, y.data_ptr(), 1)
            return y

        ys = _each_isa(run)
        want = _reference(q, x).float()  # exact sums times the scales: one rounding away at most
        for name, y in ys.items():
            assert torch.equal(y, ys[ISAS[0]]), (m, name)
            assert torch.allclose(y, want, rtol=1e-6, atol=0), (m, name)
        if m > 1:  # +-127 x +127 all along: the largest sums of either sign
            assert ys[ISAS[0]][0, 0] > 0 and ys[ISAS[0]][1, 0] < 0


def test_every_isa_gives_the_same_decode_steps(native_tts):
    """A whole predictor decode step on every path: AVX2 equals AVX-512 bit for bit (the float
    reductions in the same 16-lane order, exp in the same operations), the portable path within
    rounding."""
    cp = native_tts.talker.code_predictor.model
    torch.manual_seed(6)
    x2, x1 = torch.randn(2, 2, cp.cfg.hidden_size), torch.randn(2, 1, cp.cfg.hidden_size)
    slots = torch.arange(40)

    def step():
        cache = cp.new_cache(2, 40)
        with torch.inference_mode():
            for p in range(0, 34, 2):  # 34 cached positions: the softmax's 16-lane blocks and a tail
                cp(torch.randn(2, 2, cp.cfg.hidden_size, generator=torch.Generator().manual_seed(p)), cache, slots[p : p + 2], kv_len=p + 2)
            cp(x2, cache, slots[34:36], kv_len=36)
            return cp(x1, cache, slots[36:37], kv_len=37)

    outs = _each_isa(step)
    best = outs[ISAS[0]]
    for name, y in outs.items():
        assert (y - best).abs().max().item() <= 1e-4 * best.abs().max().item(), name
    if "avx2" in outs and "avx512" in outs:
        assert torch.equal(outs["avx2"], outs["avx512"])


# ------------------------------------------------------------------ prefill, kept prefixes
def test_native_prefill_equals_torch_ops(native_tts):
    """A whole prompt in one native call (rows at consecutive positions, causal) against the same
    layers run as torch ops: outputs and the keys / values left in the cache."""
    tr = native_tts.talker.model
    torch.manual_seed(7)
    x = torch.randn(1, 37, tr.cfg.hidden_size)
    ca, cb = tr.new_cache(1, 48), tr.new_cache(1, 48)
    tr.native.prefixes.clear()
    with torch.inference_mode():
        got = tr(x, ca, torch.arange(37), kv_len=37)
        want = without_native(tr, lambda: tr(x, cb, torch.arange(37), kv_len=37))
    assert (got - want).abs().max().item() <= 1e-4 * want.abs().max().item()
    for k, kk in zip(ca.k + ca.v, cb.k + cb.v):
        assert (k - kk).abs().max().item() <= 1e-4 * kk.abs().max().item()
        assert torch.equal(k[:, :, 37:], torch.zeros_like(k[:, :, 37:]))


@pytest.mark.parametrize("isa", ISAS)
def test_kept_prefix_gives_the_same_prefill_bit_for_bit(native_tts, isa):
    """A prompt sharing its first rows with a kept one: the same outputs and caches, bit for bit,
    as computed from scratch; a prompt equal to the kept rows, a longer shared part, no match."""
    tr = native_tts.talker.model
    store = tr.native.prefixes
    H = tr.cfg.hidden_size
    g = torch.Generator().manual_seed(8)
    head = torch.randn(1, 6, H, generator=g)
    a, b = (torch.cat([head, torch.randn(1, n, H, generator=g)], 1) for n in (5, 9))

    def prefill(x, shared, keep_store):
        if not keep_store:
            store.clear()
        c = tr.new_cache(1, 24)
        with using(isa), torch.inference_mode():
            out = tr(x, c, torch.arange(x.shape[1]), kv_len=x.shape[1], shared=shared)
        return out, c

    store.clear()
    prefill(a, 6, True)
    assert [e.rows.shape[0] for e in store.entries] == [6]
    for x, shared in [(b, 6), (b, 8), (head, 0), (head[:, :4], 0), (torch.randn(1, 7, H, generator=g), 0)]:
        got, cg = prefill(x, shared, True)
        want, cw = prefill(x, 0, False)
        assert torch.equal(got, want)
        for k, kk in zip(cg.k + cg.v, cw.k + cw.v):
            assert torch.equal(k, kk)
        store.clear()
        prefill(a, 6, True)
    prefill(b, 8, True)  # a longer shared part is kept beside the shorter one
    assert [e.rows.shape[0] for e in store.entries] == [8, 6]
    assert store.match(b[0])[1] == 8 and store.match(a[0])[1] == 6 and store.match(-a[0])[1] == 0
    store.clear()


def test_prompt_shared_rows_are_the_voice_part(native_tts, tiny_icl_voice):
    """TalkerPrompt.shared: the leading rows equal for two texts of the same voice; the next row
    differs (x-vector, ICL streaming and non-streaming)."""
    from qwen3tts.voice import VoicePrompt

    xvec = VoicePrompt(tiny_icl_voice.speaker_embedding, mode="xvector")
    for voice, nsm in [(tiny_icl_voice, False), (tiny_icl_voice, True), (xvec, False), (None, False)]:
        p, q = (native_tts._prompt(t, "English", voice, nsm) for t in ("Hello there, how are you?", "Quite different words."))
        assert 0 < p.shared == q.shared < min(p.prefill.shape[0], q.prefill.shape[0])
        assert torch.equal(p.prefill[: p.shared], q.prefill[: q.shared])
        assert not torch.equal(p.prefill[p.shared], q.prefill[q.shared])


def test_hugepage_tensors_are_aligned_and_plain_below_a_page():
    """`native.hugepages.empty`: a large buffer starts on a 2 MB boundary (Linux: its whole pages
    advised MADV_HUGEPAGE), holds what is written to it and outlives the caller's references to the
    mapping; a small one is ordinary memory. The packed int8 weights of a large layer live there."""
    from qwen3tts.native import hugepages

    big = hugepages.empty((3, 1 << 20), torch.float32)  # 12 MB
    assert big.shape == (3, 1 << 20) and big.dtype == torch.float32 and big.is_contiguous()
    if hugepages.ADVICE is not None:
        assert big.data_ptr() % hugepages.HUGE == 0
    big.copy_(torch.arange(3 << 20, dtype=torch.float32).view(3, -1))
    assert big[2, -1].item() == (3 << 20) - 1 and float(big.sum(dtype=torch.float64)) == (3 << 20) * ((3 << 20) - 1) / 2
    small = hugepages.empty(100, torch.int8)
    assert small.shape == (100,) and small.dtype == torch.int8
    q = NativeW8A8Linear(nn.Linear(1024, 4096, bias=False))  # 4 MB of int8 weights
    if hugepages.ADVICE is not None:
        assert hugepages.in_arena(q.weight_q) and q.weight_q.data_ptr() % hugepages.ALIGN == 0
    x = torch.randn(2, 1024)
    with torch.inference_mode():
        assert torch.equal(q(x), q(x.clone()))
        assert (q(x).double() - _reference(q, x)).abs().max().item() <= 2e-6 * q(x).abs().max().item()


def test_weight_arena_packs_small_weights_into_shared_huge_page_chunks():
    """`hugepages.weight`: weights of any size one after another in shared huge-page chunks,
    each 64-byte aligned and holding its own values; a tensor larger than a chunk gets its own."""
    from qwen3tts.native import hugepages

    if hugepages.ADVICE is None:
        pytest.skip("no MADV_HUGEPAGE on this platform: weight() is torch.empty")
    ts = [hugepages.weight_copy(torch.full((n,), i, dtype=torch.int8)) for i, n in enumerate((100, 3000, 1 << 20, 5))]
    for i, t in enumerate(ts):
        assert hugepages.in_arena(t) and t.data_ptr() % hugepages.ALIGN == 0 and bool((t == i).all())
    assert ts[1].data_ptr() == ts[0].data_ptr() + 128  # 100 bytes, then the next 64-byte boundary
    big = hugepages.weight((hugepages.CHUNK + 1,), torch.uint8)
    assert hugepages.in_arena(big) and big.numel() == hugepages.CHUNK + 1
    assert not hugepages.in_arena(torch.zeros(10))
    from qwen3tts.native.q4 import NativeW4A8Linear

    q = NativeW4A8Linear(nn.Linear(256, 64, bias=False))  # 8 KB of int4 weights: in the arena too
    assert hugepages.in_arena(q.weight_q)
