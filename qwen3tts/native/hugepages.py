"""Tensors in transparent-huge-page memory, for the large weight buffers the native kernels stream.

A matrix-vector product reads each weight byte once, so its speed is the memory's read
bandwidth; with 4 KB pages a sequential read of hundreds of MB also walks a page table entry
every 4 KB (TLB misses, and the hardware prefetchers stop at every 4 KB page boundary). Memory
in 2 MB pages avoids both. `empty` gives a tensor whose whole 2 MB pages are advised
`MADV_HUGEPAGE` (used where the kernel's THP mode is `madvise`, the common default; with
`always` they are huge anyway): an anonymous private mapping with room to align its start to 2
MB; only the aligned whole pages are advised, so the tail (and the alignment slack, never
touched) costs no more memory than 4 KB pages would. Elsewhere (no `MADV_HUGEPAGE`: not Linux,
or a buffer under 2 MB) it is `torch.empty`. The memory is released when the last tensor
viewing it is.

`weight` places a model's packed weights one after another in shared chunks of such memory (an
arena, 64-byte aligned): a model has many matrices under 2 MB, or not a multiple of it, whose
own mappings would leave them (or their tails) in 4 KB pages. A chunk is released when no
tensor views it any more, except the one still being filled.
"""

from __future__ import annotations

import ctypes
import mmap
import threading

import torch

HUGE = 2 << 20  # bytes per huge page (x86-64 and most aarch64 kernels)
CHUNK = 32 << 20  # bytes per arena chunk (`weight`); a larger tensor gets a chunk of its own size
ALIGN = 64  # bytes: the start of every arena tensor (one cache line, a full vector load)
ADVICE = getattr(mmap, "MADV_HUGEPAGE", None)


def empty(shape, dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised contiguous CPU tensor of `shape` / `dtype`, in huge pages where it can be."""
    shape = torch.Size(shape if isinstance(shape, (tuple, list, torch.Size)) else (shape,))
    nbytes = shape.numel() * torch.empty((), dtype=dtype).element_size()
    if ADVICE is None or nbytes < HUGE:
        return torch.empty(shape, dtype=dtype)
    try:
        mm = mmap.mmap(-1, nbytes + HUGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        start = ctypes.addressof(ctypes.c_char.from_buffer(mm))
        off = -start % HUGE  # the first 2 MB boundary in the mapping
        mm.madvise(ADVICE, off, nbytes // HUGE * HUGE)
    except (OSError, ValueError, AttributeError):  # a kernel without THP refuses the advice: plain memory
        return torch.empty(shape, dtype=dtype)
    flat = torch.frombuffer(mm, dtype=torch.uint8)  # keeps the mapping alive while any view of it lives
    return flat[off : off + nbytes].view(dtype).view(shape)


def copy_of(t: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of `t` in `empty`'s memory."""
    out = empty(t.shape, t.dtype)
    out.copy_(t)
    return out


class _Arena:
    """Bump allocation of `weight` tensors in huge-page chunks (made by `empty`)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.chunk: torch.Tensor | None = None  # uint8, the chunk being filled
        self.used = 0
        self.ranges: list[tuple[int, int]] = []  # [start, end) of every chunk made

    def take(self, nbytes: int) -> torch.Tensor:
        with self.lock:
            if self.chunk is None or self.used + nbytes > self.chunk.numel():
                size = max(CHUNK, -(-nbytes // HUGE) * HUGE)
                self.chunk, self.used = empty(size, torch.uint8), 0
                self.ranges.append((self.chunk.data_ptr(), self.chunk.data_ptr() + size))
            out = self.chunk[self.used : self.used + nbytes]
            self.used += -(-nbytes // ALIGN) * ALIGN
            return out


_arena = _Arena()


def weight(shape, dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised contiguous CPU tensor for a weight the native kernels stream, in the
    shared huge-page arena (plain memory where `empty` gives plain memory)."""
    shape = torch.Size(shape if isinstance(shape, (tuple, list, torch.Size)) else (shape,))
    nbytes = shape.numel() * torch.empty((), dtype=dtype).element_size()
    if ADVICE is None or nbytes == 0:
        return torch.empty(shape, dtype=dtype)
    return _arena.take(nbytes).view(dtype).view(shape)


def weight_copy(t: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of `t` in `weight`'s memory."""
    out = weight(t.shape, t.dtype)
    out.copy_(t)
    return out


def in_arena(t: torch.Tensor) -> bool:
    """Does `t`'s memory lie in a chunk of the weight arena?"""
    p = t.data_ptr()
    return any(a <= p < b for a, b in _arena.ranges)
