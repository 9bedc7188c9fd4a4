"""RMSNorm and RoPE kernels: the torch reference (reference.py: the semantics, HF cast order)
and Triton kernels (triton_rmsnorm.py, triton_rope.py) for CUDA tensors. Which one runs is the
compute plan's choice (qwen3tts/ops: its Triton backend, `QWEN3TTS_KERNELS=auto|torch|triton`),
made once when a model is loaded. `import triton` happens lazily, never at package import.
"""
