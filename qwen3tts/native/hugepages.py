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
"""

from __future__ import annotations

import ctypes
import mmap

import torch

HUGE = 2 << 20  # bytes per huge page (x86-64 and most aarch64 kernels)
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
