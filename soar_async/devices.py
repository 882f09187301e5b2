"""What this machine's processor computes natively, for choosing precisions on CPU.

Shared by the LLM engines and the trainer: both run bf16 on a CPU only where its cores have
bf16 instructions (AVX512-BF16 or AMX), because elsewhere bf16 is emulated and slower than fp32.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path


@cache
def cpu_has_native_bf16() -> bool:
    """True when /proc/cpuinfo lists avx512_bf16 or amx_bf16 (False where it cannot be read)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
