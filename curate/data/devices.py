"""Whether this machine has a CUDA GPU, asked without importing torch (stages declare their resources when a config
is checked, and `curate validate` must not wait seconds for torch): torch's own answer once torch is loaded, else
whether the NVIDIA driver shows a device."""

from __future__ import annotations

import glob
import sys


def cuda_available() -> bool:
    torch = sys.modules.get("torch")
    if torch is not None:
        return bool(torch.cuda.is_available())
    return bool(glob.glob("/dev/nvidia[0-9]*"))
