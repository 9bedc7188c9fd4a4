"""Winograd (Toom-Cook) F(m, 7) convolution for the codec decoder's k7 convolutions on CPU.

Not in the official model: an exact rewrite of the same convolution (`CausalConv1d`, k = 7,
any dilation) with fewer multiplications. Per phase of the dilation the convolution is a plain
correlation; its outputs are cut into tiles of m, and each tile costs n = m + 6 products per
(input, output) channel pair instead of 7 m:

    y_tile = AT [(G w) * (BT x_tile)]       (Lavin & Gray 2015; 1-D, channels as GEMMs)

The n channel mixes are n GEMMs (torch.bmm); the transforms run in the native library
(`codec.c`: `qwen3tts_wino_in` / `qwen3tts_wino_out`, which adds the bias). F(4, 7): 10 / 28
of the direct products (2.8x fewer); the evaluation points below keep its float32 error near
that of a direct convolution (error search in docs/kernels.md). On the full-size codec the
decoded audio differs from a float64 decode by as much as the direct float32 decode does
(tests/test_winograd.py, docs/benchmarks.md).
"""

from __future__ import annotations

import ctypes
from fractions import Fraction

import torch

from .. import cpuinfo

TILE = 4  # m: outputs per tile
POINTS = tuple(Fraction(p) for p in ("0", "2", "-2", "5/4", "-5/4", "4/5", "-4/5", "2/5", "-2/5"))  # + infinity
MIN_CHANNELS = 96  # fewer channels: the transforms cost about what they save
MIN_ROWS = 16  # fewer GEMM rows: weight-bound, and U is 10/7 of the weight (direct GEMM instead)
MIN_ROWS_AVX2 = 8  # with 8-lane FMAs the direct products cost twice the time: from here, when the tiles are >= 3/4 used


def gemm_rows(batch: int, out_len: int, dilation: int, m: int = TILE) -> int:
    """Rows of each of the n GEMMs for `out_len` outputs: batch x phases x tiles per phase."""
    return batch * dilation * -(-out_len // (m * dilation))


def pays(batch: int, out_len: int, dilation: int, isa: str, m: int = TILE) -> bool:
    """Does Winograd pay for `out_len` outputs per batch row with the native kernels of `isa`?
    From MIN_ROWS GEMM rows; under AVX2 also from MIN_ROWS_AVX2 rows when at least 3/4 of the
    tiles' outputs are wanted (a 1-frame streaming step of the 768-channel convolutions: 32
    outputs in 8-9 rows, 7 x 32 products per channel pair direct, 10 x 8-9 here)."""
    rows = gemm_rows(batch, out_len, dilation, m)
    if rows >= MIN_ROWS:
        return True
    return isa == "avx2" and rows >= MIN_ROWS_AVX2 and 4 * batch * out_len >= 3 * m * rows


def worth(batch: int, out_len: int, dilation: int, lib) -> bool:
    """`pays` for the instruction set the native library `lib` runs now; AVX-512 on a CPU whose
    512-bit FMAs run as two 256-bit halves (`avx512_halves`) follows the AVX2 rule (the direct
    products gain no width there)."""
    from .. import native

    isa = native.isa(lib)
    if isa == "avx512" and avx512_halves():
        isa = "avx2"
    return pays(batch, out_len, dilation, isa)


def avx512_halves() -> bool:
    """Does this CPU execute 512-bit FMAs as two 256-bit halves? AMD family 0x19 (Zen 4, the
    only one of that family with AVX-512) does; Intel's AVX-512 cores and Zen 5 (0x1a) run them
    at full width (and are not matched)."""
    f = cpuinfo.fields()
    return f.get("vendor_id") == "AuthenticAMD" and f.get("cpu family") == "25"


def matrices(m: int, r: int, points=POINTS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(AT (m, n), G (n, r), BT (n, n)) in float64 for F(m, r) with the n - 1 finite `points`
    and infinity, n = m + r - 1: correlation y_p = sum_j w_j x_(p+j) = AT [(G w) * (BT x)].

    From linear convolution c = V^-1 [(V_m a) * (V_r w)] (V_k: the n x k Vandermonde of the
    points, infinity as the last row) by transposition in a: AT = V_m^T, G = V_r, BT = V^-T."""
    n = m + r - 1
    pts = [Fraction(p) for p in points]
    if len(pts) != n - 1 or len(set(pts)) != n - 1:
        raise ValueError(f"F({m}, {r}) needs {n - 1} distinct finite points")

    def vander(k):  # (n, k)
        return [[p**j for j in range(k)] for p in pts] + [[Fraction(0)] * (k - 1) + [Fraction(1)]]

    vinv = _inverse(vander(n))
    AT = [list(col) for col in zip(*vander(m))]  # (m, n)
    BT = [list(col) for col in zip(*vinv)]  # (n, n): V^-T
    f = lambda a: torch.tensor([[float(v) for v in row] for row in a], dtype=torch.float64)  # noqa: E731
    return f(AT), f(vander(r)), f(BT)


def _inverse(a: list[list[Fraction]]) -> list[list[Fraction]]:
    """Exact Gauss-Jordan inverse of a small square matrix of Fractions."""
    n = len(a)
    aug = [row[:] + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(a)]
    for c in range(n):
        p = next(i for i in range(c, n) if aug[i][c] != 0)
        aug[c], aug[p] = aug[p], aug[c]
        piv = aug[c][c]
        aug[c] = [v / piv for v in aug[c]]
        for i in range(n):
            if i != c and aug[i][c] != 0:
                f = aug[i][c]
                aug[i] = [v - f * w for v, w in zip(aug[i], aug[c])]
    return [row[n:] for row in aug]


_MATS: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def _mats(m: int, r: int):
    if (m, r) not in _MATS:
        AT, G, BT = matrices(m, r)
        _MATS[(m, r)] = (AT.float().contiguous(), G, BT.float().contiguous())
    return _MATS[(m, r)]


def transform_weight(weight: torch.Tensor, m: int = TILE) -> torch.Tensor:
    """Conv weight (Cout, Cin, r) -> U (n, Cin, Cout) = G w, computed in float64 once."""
    r = weight.shape[-1]
    G = _mats(m, r)[1]
    return torch.einsum("ij,ocj->ico", G, weight.double()).to(weight.dtype).contiguous()


PIECE_BYTES = 4 << 20  # transformed input per piece (V: n x rows x Cin floats): stays in cache


FUSED_MAX_CHANNELS = 192  # up to this many channels (in and out) the fused native kernel runs the whole convolution
FUSED_CHUNK = 64 * 96  # tile rows x channels per chunk: V and M (10 x 4 x 64 x 96 bytes each) stay in L2


def fused(cin: int, cout: int, lib, m: int = TILE) -> bool:
    """Does `qwen3tts_wino_fused` serve this F(m, 7) convolution? (the AVX-512 or AVX2 kernels
    in use, F(4, 7), at most FUSED_MAX_CHANNELS channels: there the unfused transforms are
    memory-bound.)"""
    return m == 4 and max(cin, cout) <= FUSED_MAX_CHANNELS and bool(lib.qwen3tts_wino_fused_available())


def pack_mix(U: torch.Tensor, rows_hint: int = 256) -> list:
    """The n channel mixes of U (n, Cin, Cout) as n oneDNN products with packed weights
    (native/dnn.py): mix i maps V[i] (rows, Cin) to V[i] @ U[i]."""
    from ..native.dnn import PackedLinear

    return [PackedLinear(u.T, max(rows_hint, 32)) for u in U]  # u.T: (Cout, Cin)


def _mixes(U, V: torch.Tensor):
    """The n channel mixes of the transformed tiles V (n, rows, Cin): n oneDNN products where U
    is `pack_mix`'s list, one call where U computes them all (`U.mix_all(V)`: the int16 mixes), else
    one `torch.bmm` with U (n, Cin, C). Returns the products (kept
    alive while the native output transform reads them) and their n row pointers."""
    n = len(V)
    if hasattr(U, "mix_all"):  # the n mixes in one call (the quantized modes' int16 mixes)
        M = U.mix_all(V)  # (n, rows, C)
    elif not isinstance(U, torch.Tensor):
        M = [mix(v) for mix, v in zip(U, V)]  # n x (rows, C)
        return M, (ctypes.c_void_p * n)(*(t.data_ptr() for t in M))
    else:
        M = torch.bmm(V, U)  # (n, rows, C)
    return M, (ctypes.c_void_p * n)(*(M.data_ptr() + i * M.stride(0) * M.element_size() for i in range(n)))


def conv(x: torch.Tensor, U, bias: torch.Tensor | None, dilation: int, lib, m: int = TILE,
         history: torch.Tensor | None = None, epilogue: tuple | None = None) -> torch.Tensor:
    """Valid (unpadded) dilated convolution of x (B, Cin, L), float32 on CPU, by F(m, r):
    (B, Cout, L - (r - 1) d), returned as a channels-last view (memory (B, T, Cout)).

    `U`: the transformed weight (n, Cin, Cout) (the channel mixes run as `torch.bmm`), or
    `pack_mix(U)` (n oneDNN products, ~2-3x faster on CPU; the same sums to rounding).
    `history` (B, P, Cin), contiguous: rows that precede x in time (a streaming layer's state),
    read in place instead of concatenated: the input is [history; x], of P + L rows.
    Long signals run in pieces of whole tiles (independent valid convolutions over overlapping
    input windows), so that the transformed tiles stay in cache between the three passes.
    `epilogue` (the fused kernel only, `fused_epilogue`): (res (B, T, Cout) contiguous, alpha2,
    inv_beta2, W2 (Cout, Cout) as (in, out), b2): the output is res + W2 snake2(conv) + b2, the
    rest of a residual unit computed on each chunk while it is in cache."""
    packed = not isinstance(U, torch.Tensor)
    if packed:
        n, (cout, cin) = len(U), U[0].shape
    else:
        n, cin, cout = U.shape
    r = n - m + 1
    B, C, L = x.shape
    d = dilation
    P = 0 if history is None else history.shape[1]
    T = P + L - (r - 1) * d
    if (C != cin or T <= 0 or n > 32 or x.dtype != torch.float32 or (not packed and U.dtype != torch.float32)
            or (history is not None and (history.shape != (B, P, C) or history.dtype != x.dtype or not history.is_contiguous()))):
        raise ValueError(f"winograd conv: input {tuple(x.shape)} {x.dtype} does not fit U of {n} x {cin} x {cout} (dilation {d})")
    AT, _, BT = _mats(m, r)
    xc = x.transpose(1, 2)  # (B, L, C)
    if not xc.is_contiguous():
        xc = xc.contiguous()
    hp = history.data_ptr() if P else None
    y = torch.empty(B, T, cout, dtype=x.dtype)
    if not packed and fused(cin, cout, lib, m) and U.is_contiguous():
        # the whole convolution in one native call, chunks of TR tile rows in each thread's L2
        q = -(-T // (m * d))  # tiles per phase
        TR = max(8, FUSED_CHUNK // max(cin, cout) // 8 * 8)  # tile rows per chunk
        bp = bias.data_ptr() if bias is not None else None
        epi = None
        if epilogue is not None:
            res, a2, ib2, w2, b2 = epilogue
            if res.shape != (B, T, cout) or not res.is_contiguous() or cin != cout or w2.shape != (cout, cout):
                raise ValueError("winograd conv: the epilogue does not fit")
            TR = max(d, TR // d * d)  # whole tiles of every phase per chunk
            epi = (ctypes.c_void_p * 5)(res.data_ptr(), a2.data_ptr(), ib2.data_ptr(), w2.data_ptr(), None if b2 is None else b2.data_ptr())
        rc = lib.qwen3tts_wino_fused(hp, P, P, xc.data_ptr(), L, L, B, cin, cout, U.data_ptr(), BT.data_ptr(), AT.data_ptr(), bp,
                                     q, T, T, y.data_ptr(), TR, d, epi, T, torch.get_num_threads())
        if rc != 0:
            raise MemoryError("winograd conv: the native kernel could not allocate its buffers")
        return y.transpose(1, 2)
    if epilogue is not None:
        raise ValueError("winograd conv: an epilogue needs the fused kernel")
    rows_max = max(64, PIECE_BYTES // (4 * n * cin * B))  # rows of one piece (per batch entry)
    step = max(m * d, rows_max * m // (m * d) * (m * d))  # outputs per piece: whole tiles of every phase
    nt = torch.get_num_threads()
    bp = bias.data_ptr() if bias is not None else None
    ys = y.element_size() * cout  # bytes per output row
    for s in range(0, T, step):
        t = min(step, T - s)
        q = -(-t // (m * d))  # tiles per phase
        rows = B * q * d
        V = torch.empty(n, rows, cin, dtype=x.dtype)  # transformed input tiles
        lib.qwen3tts_wino_in(hp, P, P, xc.data_ptr(), L, L, s, B, cin, V.data_ptr(), rows * cin, cin, BT.data_ptr(), m, n, d, q, nt)
        M, ptrs = _mixes(U, V)
        lib.qwen3tts_wino_out(ptrs, cout, B, t, T, cout, y.data_ptr() + s * ys, AT.data_ptr(), bp, m, n, d, q, nt)
    return y.transpose(1, 2)


# ---- transposed convolutions (k <= 2s) as 2-tap correlations: F(4, 2)
T_TILE = 4  # outputs (input columns) per tile: 5 products where the direct GEMM takes 8
T_POINTS = tuple(Fraction(p) for p in ("1", "-3/2", "-2/3", "1/3"))  # + infinity; float32 error ~2x a direct product's
T_PIECE_ROWS = 256  # at least this many rows per channel mix in a piece (the weight is read once per piece)
T_MIN_ROWS = 64  # fewer rows per channel mix: weight-bound, and U is 5/2 of the weight (the GEMM instead)
T_MAX_U = 16 * 2**20  # floats in a layer's transformed weight: above (the first block's 47 M) it costs more memory than it saves time


def transposed_pays(batch: int, n_in: int, cin: int, cout: int, stride: int) -> bool:
    """Does F(4, 2) pay for a transposed convolution of `n_in` input columns per batch row? Not
    for a layer whose transformed weight (5 x Cin x stride x Cout, kept beside the weight) would
    pass T_MAX_U floats: the decoder's first block (1536 -> 768 channels) sees 64+ tiles only when
    a voice's reference primes a stream, and its 189 MB copy would raise the peak memory."""
    return batch * -(-(n_in + 1) // T_TILE) >= T_MIN_ROWS and 5 * cin * stride * cout <= T_MAX_U


def transform_transposed(weight: torch.Tensor, stride: int) -> torch.Tensor:
    """Transposed-conv weight (Cin, Cout, k), k <= 2 s -> U (5, Cin, s * Cout) = G [w0; w1] in float64.

    Output block t (samples t s .. t s + s - 1, as one row of s * Cout values) is
    w0 x_(t-1) + w1 x_t with w1[:, j, :] = W[:, :, j] and w0[:, j, :] = W[:, :, s + j] (zero for
    s + j >= k): a 2-tap correlation over the input columns, computed by F(4, 2)."""
    cin, cout, k = weight.shape
    s = stride
    w = weight.detach().double()
    w1 = w[:, :, :s].permute(0, 2, 1)  # (Cin, s, Cout)
    w0 = torch.zeros_like(w1)
    w0[:, : k - s] = w[:, :, s:].permute(0, 2, 1)
    G = _t_mats()[1]
    return torch.einsum("ir,rco->ico", G, torch.stack([w0, w1]).reshape(2, cin, s * cout)).to(weight.dtype).contiguous()


def _t_mats():
    if "t" not in _MATS:
        AT, G, BT = matrices(T_TILE, 2, T_POINTS)
        _MATS["t"] = (AT.float().contiguous(), G, BT.float().contiguous())
    return _MATS["t"]


def conv_transpose(x: torch.Tensor, U, bias: torch.Tensor | None, lib) -> torch.Tensor:
    """The output blocks of a transposed convolution (k <= 2 s) of x (B, Cin, N), float32 on CPU,
    by F(4, 2): (B, N + 1, s * Cout), block t = w0 x_(t-1) + w1 x_t (+ bias) with x_(-1) = x_N = 0,
    so blocks 0..N-1 hold the overlap-add within x, and block N (bias included) what spills
    into the next chunk. `U`: `transform_transposed`'s (the mixes as `torch.bmm`) or its
    `pack_mix` (oneDNN products). Long inputs run in pieces of whole tiles (see `conv`)."""
    packed = not isinstance(U, torch.Tensor)
    if packed:
        n, (C, cin) = len(U), U[0].shape
    else:
        n, cin, C = U.shape
    m = n - 1
    B, Cx, N = x.shape
    if Cx != cin or n != T_TILE + 1 or x.dtype != torch.float32:
        raise ValueError(f"winograd conv_transpose: input {tuple(x.shape)} {x.dtype} does not fit U of {n} x {cin} x {C}")
    AT, _, BT = _t_mats()
    xc = x.transpose(1, 2)  # (B, N, Cin)
    if not xc.is_contiguous():
        xc = xc.contiguous()
    zero = torch.zeros(B, cin)  # x_(-1): one zero row of history per batch row
    T = N + 1
    y = torch.empty(B, T, C, dtype=x.dtype)
    bt = None if bias is None else bias.repeat(C // bias.shape[0])  # (s * Cout,): the bias of every sample
    nt = torch.get_num_threads()
    step = max(T_PIECE_ROWS, PIECE_BYTES // (4 * n * cin * B)) * m  # outputs per piece: whole tiles
    for s0 in range(0, T, step):
        t = min(step, T - s0)
        q = -(-t // m)
        rows = B * q
        V = torch.empty(n, rows, cin, dtype=x.dtype)
        lib.qwen3tts_wino_in(zero.data_ptr(), 1, 1, xc.data_ptr(), N, N, s0, B, cin, V.data_ptr(), rows * cin, cin, BT.data_ptr(), m, n, 1, q, nt)
        M, ptrs = _mixes(U, V)
        lib.qwen3tts_wino_out(ptrs, C, B, t, T, C, y.data_ptr() + s0 * C * y.element_size(), AT.data_ptr(),
                              None if bt is None else bt.data_ptr(), m, n, 1, q, nt)
    return y
