"""Load official safetensors checkpoints into the hand-written modules.

Our module trees use the official parameter names (the state_dict names that `save_pretrained`
of the official classes writes), so loading is a strict, checked copy: a missing or unexpected
tensor, or a shape mismatch, is an error that names it. A few official tensors are unused at
inference and are allowed to be absent from our modules (`ignore` patterns).

Memory: a checkpoint is read tensor by tensor with plain file reads (`TensorFile`, no memory
map: the file's pages are never part of the process), converted to the model dtype in bounded
pieces, and written straight into the module's tensor. A module built on the meta device (no
storage) gets its tensors made here, in their final dtype, so loading holds at most the model
plus one piece of one tensor.

A lookup table only a few rows of which are read per step (the talker's text embedding, 151936
rows) can stay in the file (`FileEmbedding`): each lookup reads its rows, so the table costs no
resident memory (the kernel's page cache keeps the hot rows, and gives them back under pressure).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Iterable

import torch

class WeightsError(ValueError):
    pass


_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64,
           "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}
PIECE_BYTES = 32 << 20  # a conversion reads at most this many bytes of the file at once


class TensorView(Mapping):
    """A read-on-access mapping name -> tensor over a table keyed by full tensor names (`_table`),
    seen under `prefix` (prefix stripped): what the loaders read a checkpoint through. A subclass
    sets the table (`_see`) and reads a tensor (`read(name)`)."""

    def _see(self, table: Mapping, prefix: str) -> None:
        self._table, self.prefix = table, prefix
        self._names = [k[len(prefix):] for k in table if k.startswith(prefix)]

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name) -> bool:
        return isinstance(name, str) and (self.prefix + name) in self._table

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self:
            raise KeyError(name)
        return self.read(name)


class TensorFile(TensorView):
    """The tensors of a safetensors file as a read-on-access mapping name -> tensor (names under
    `prefix`, prefix stripped). Nothing is memory-mapped or kept: each access reads the tensor."""

    def __init__(self, path: str | Path, prefix: str = "", _header=None):
        self.path = Path(path)
        if _header is None:
            if not self.path.exists():
                raise FileNotFoundError(f"missing weights file: {self.path}")
            with open(self.path, "rb") as f:
                n = int.from_bytes(f.read(8), "little")
                try:
                    meta = json.loads(f.read(n))
                except (ValueError, UnicodeDecodeError) as e:
                    raise WeightsError(f"{self.path} is not a safetensors file ({e})") from None
            meta.pop("__metadata__", None)
            _header = (8 + n, meta)
        self._base, self._meta = _header
        self._see(self._meta, prefix)

    def view(self, prefix: str) -> "TensorFile":
        """The tensors under `prefix` (relative to this view), prefix stripped."""
        return TensorFile(self.path, self.prefix + prefix, (self._base, self._meta))

    def _info(self, name: str) -> dict:
        try:
            return self._meta[self.prefix + name]
        except KeyError:
            raise KeyError(name) from None

    def shape(self, name: str) -> tuple:
        return tuple(self._info(name)["shape"])

    def dtype(self, name: str) -> torch.dtype:
        d = self._info(name)["dtype"]
        if d not in _DTYPES:
            raise WeightsError(f"{self.path}: tensor {self.prefix + name} has unsupported dtype {d}")
        return _DTYPES[d]

    def read(self, name: str, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
        """The tensor `name`, converted to `dtype` (default: the file's) on `device` (default:
        cpu), read in pieces of at most PIECE_BYTES of the file."""
        info, src = self._info(name), self.dtype(name)
        shape, (start, end) = self.shape(name), info["data_offsets"]
        dtype = dtype or src
        out = torch.empty(shape, dtype=dtype, device=device or "cpu")
        n = out.numel()
        if (end - start) != n * src.itemsize:
            raise WeightsError(f"{self.path}: tensor {self.prefix + name} has {end - start} bytes, expected {n * src.itemsize}")
        flat = out.view(-1)
        step = max(1, PIECE_BYTES // src.itemsize)
        direct = dtype == src and out.device.type == "cpu"
        with open(self.path, "rb", buffering=0) as f:
            f.seek(self._base + start)
            for i in range(0, n, step):
                j = min(n, i + step)
                piece = flat[i:j] if direct else torch.empty(j - i, dtype=src)
                view = memoryview(piece.view(torch.uint8).numpy()) if j > i else memoryview(b"")
                got = 0
                while got < len(view):
                    r = f.readinto(view[got:])
                    if not r:
                        raise WeightsError(f"{self.path} is truncated (tensor {self.prefix + name})")
                    got += r
                if not direct:
                    flat[i:j].copy_(piece)
        return out


class FileEmbedding(torch.nn.Module):
    """`nn.Embedding` (no padding row, no norm) whose table stays in a safetensors file: a
    lookup reads the rows it needs (`os.pread`, one per distinct id) and converts them to
    `dtype`, which gives exactly the rows of the table loaded in `dtype`. The file is held open,
    so replacing it on disk (a rename) does not change the model. `weight` reads the whole table
    (for inspection; nothing is kept); the module has no parameters, so it is absent from
    `state_dict()`."""

    def __init__(self, tensors: "TensorFile", name: str, dtype: torch.dtype):
        super().__init__()
        info, src = tensors._info(name), tensors.dtype(name)
        shape = tensors.shape(name)
        if len(shape) != 2:
            raise WeightsError(f"{tensors.path}: {tensors.prefix + name} is not a table (shape {shape})")
        self.num_embeddings, self.embedding_dim = shape
        self.src_dtype, self.dtype = src, dtype
        self.path, self._name, self._tensors = tensors.path, name, tensors
        self._start = tensors._base + info["data_offsets"][0]
        self._row = self.embedding_dim * src.itemsize
        if info["data_offsets"][1] - info["data_offsets"][0] != self.num_embeddings * self._row:
            raise WeightsError(f"{tensors.path}: tensor {tensors.prefix + name} has the wrong byte count")
        self._fd = os.open(self.path, os.O_RDONLY)
        if os.fstat(self._fd).st_size < self._start + self.num_embeddings * self._row:
            os.close(self._fd)
            raise WeightsError(f"{tensors.path} is truncated (tensor {tensors.prefix + name})")

    def __del__(self):
        fd = self.__dict__.get("_fd")
        if fd is not None:
            os.close(fd)

    def __deepcopy__(self, memo):
        return FileEmbedding(self._tensors, self._name, self.dtype)

    def __getstate__(self):
        raise TypeError("a FileEmbedding reads its file: pickle the model's path, not the module")

    @property
    def weight(self) -> torch.Tensor:
        """The whole table in `dtype`, read now (not kept)."""
        return self._tensors.read(self._name, self.dtype)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1).cpu()
        if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= self.num_embeddings):
            raise IndexError(f"index out of range in self (ids must be in [0, {self.num_embeddings}))")
        uniq, inv = torch.unique(flat, return_inverse=True)
        rows = torch.empty(len(uniq), self.embedding_dim, dtype=self.src_dtype)
        buf = rows.view(torch.uint8).numpy()  # (n, row bytes): the rows' memory
        for i, r in enumerate(uniq.tolist()):
            got = os.preadv(self._fd, [buf[i]], self._start + r * self._row)
            if got != self._row:
                raise WeightsError(f"{self.path} is truncated (tensor {self._tensors.prefix + self._name})")
        out = rows.to(self.dtype)[inv]  # (n ids, dim)
        return out.view(*ids.shape, self.embedding_dim).to(ids.device)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, in {self.path.name} ({self.src_dtype} -> {self.dtype})"


def read_on_access(tensors) -> bool:
    """A read-on-access source (`TensorFile`, or one with its `view` / `shape` / `dtype` / `read`
    methods, e.g. dev.random_model.RandomTensors) rather than a dict of tensors."""
    return isinstance(tensors, TensorFile) or all(hasattr(tensors, a) for a in ("view", "shape", "dtype", "read"))


def read_safetensors(path: str | Path, prefix: str = "") -> TensorFile:
    """The tensors of `path` whose name starts with `prefix` (prefix stripped), read on access."""
    return TensorFile(path, prefix)


def split_by_prefix(tensors: Mapping, prefixes: Iterable[str], what: str) -> list[Mapping]:
    """One mapping per prefix (prefix stripped); a tensor under none of them is an error. A
    `TensorFile` (or another read-on-access source) gives views (nothing is read here)."""
    prefixes = list(prefixes)
    other = sorted(k for k in tensors if not k.startswith(tuple(prefixes)))
    if other:
        raise WeightsError(f"{what} has unexpected tensors: {', '.join(other[:20])}")
    if read_on_access(tensors):
        return [tensors.view(p) for p in prefixes]
    return [{k[len(p):]: v for k, v in tensors.items() if k.startswith(p)} for p in prefixes]


def view(tensors: Mapping, prefix: str) -> Mapping:
    """The tensors under `prefix`, prefix stripped (a `TensorFile` view reads nothing)."""
    if read_on_access(tensors):
        return tensors.view(prefix)
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _shape(tensors: Mapping, k: str) -> tuple:
    return tensors.shape(k) if read_on_access(tensors) else tuple(tensors[k].shape)


def _src_dtype(tensors: Mapping, k: str) -> torch.dtype:
    return tensors.dtype(k) if read_on_access(tensors) else tensors[k].dtype


def _fetch(tensors: Mapping, k: str, dtype: torch.dtype, device) -> torch.Tensor:
    if read_on_access(tensors):
        return tensors.read(k, dtype, device)
    return tensors[k].to(device=device, dtype=dtype)


# Checkpoint dtypes that float32 holds exactly: a table kept in one of them (`keep_dtype`) and
# widened per looked-up row gives the same numbers as the widened table.
_EXACT_IN_F32 = (torch.bfloat16, torch.float16)


def kept_dtype(model_dtype: torch.dtype, src: torch.dtype) -> torch.dtype:
    """The dtype a lookup table is held in: the checkpoint's where the model is float32 and it
    widens exactly (`_EXACT_IN_F32`), else the model's."""
    return src if model_dtype == torch.float32 and src in _EXACT_IN_F32 else model_dtype


def load_into(
    module: torch.nn.Module,
    tensors: Mapping,
    *,
    ignore: Iterable[str] = (),
    what: str = "checkpoint",
    dtype: torch.dtype | None = None,
    device=None,
    keep_dtype: Iterable[str] = (),
    only_meta: bool = False,
) -> None:
    """Copy `tensors` (a dict or a `TensorFile`) into `module`'s parameters and persistent
    buffers, strictly.

    `ignore`: regexes of checkpoint names that are known to be unused (not an error when
    the module lacks them). Floating tensors are cast to `dtype` (default: the parameter's).
    Tensors on the meta device are made here (on `device`, default cpu) instead of copied into.
    `keep_dtype`: regexes of names (lookup tables) that stay in the checkpoint's bfloat16 /
    float16 where the model is float32 (exact: their users widen the rows they look up).
    `only_meta`: fill only the tensors still on the meta device, without the strict check (the
    caller ran `check_names` on the whole module before loading parts of it).
    """
    if not only_meta:
        check_names(module, tensors, ignore=ignore, what=what)
    keep = [re.compile(p) for p in keep_dtype]
    with torch.no_grad():
        for k, t in module.state_dict(keep_vars=True).items():
            if only_meta and not t.is_meta:
                continue
            want = (dtype or t.dtype) if t.is_floating_point() else t.dtype
            src = _src_dtype(tensors, k)
            if any(p.fullmatch(k) for p in keep):
                want = kept_dtype(want, src)
            if t.is_meta or want != t.dtype:
                owner, _, name = k.rpartition(".")
                mod = module.get_submodule(owner)
                new = _fetch(tensors, k, want, device if t.is_meta else t.device)
                if name in mod._parameters:
                    mod._parameters[name] = torch.nn.Parameter(new, requires_grad=False)
                else:
                    mod._buffers[name] = new
            else:
                t.copy_(_fetch(tensors, k, want, t.device))


def check_names(module: torch.nn.Module, tensors: Mapping, *, ignore: Iterable[str] = (), what: str = "checkpoint") -> None:
    """The strict check of `load_into`: every tensor of `module` in `tensors` with its shape, and
    nothing else there (but `ignore`d names); raises WeightsError naming the differences."""
    pats = [re.compile(p) for p in ignore]
    own = dict(module.state_dict())
    missing = sorted(k for k in own if k not in tensors)
    unexpected = sorted(k for k in tensors if k not in own and not any(p.fullmatch(k) for p in pats))
    bad_shape = sorted(
        f"{k}: checkpoint {_shape(tensors, k)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in tensors and _shape(tensors, k) != tuple(own[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"missing tensors ({len(missing)}): " + ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else ""))
    if unexpected:
        problems.append(f"unexpected tensors ({len(unexpected)}): " + ", ".join(unexpected[:20]) + (" ..." if len(unexpected) > 20 else ""))
    if bad_shape:
        problems.append("shape mismatch: " + "; ".join(bad_shape[:20]))
    if problems:
        raise WeightsError(f"{what} does not match the model: " + " | ".join(problems))


# Heap blocks at least this large are mapped on their own and unmapped when freed (glibc
# `M_MMAP_THRESHOLD`). glibc's default raises the threshold to the largest block freed so far (up
# to 32 MB), after which the codec's and the encoder's mid-sized activations stay in the heap when
# freed and the next stage's large tensors are mapped beside them; a fixed threshold returns them.
HEAP_MMAP_BYTES = 4 << 20


def _libc():
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def limit_heap_retention(threshold: int = HEAP_MMAP_BYTES) -> bool:
    """Fix the C heap's mmap threshold at `threshold` bytes for the process (glibc `mallopt`),
    so freed blocks of that size or more go back to the system at once. Returns whether it was
    set (False off glibc)."""
    libc = _libc()
    try:
        return bool(libc is not None and libc.mallopt(-3, int(threshold)))  # -3: M_MMAP_THRESHOLD
    except AttributeError:
        return False


def release_freed_memory() -> None:
    """Give the C heap's free pages back to the system (glibc `malloc_trim`): loading frees
    many mid-sized temporaries (per-piece conversions, unfused q/k/v, float weights replaced by
    quantized ones) that would otherwise stay in the process's resident set. A no-op elsewhere."""
    libc = _libc()
    try:
        if libc is not None:
            libc.malloc_trim(0)
    except AttributeError:
        pass
