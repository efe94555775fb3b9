"""Peak memory of the benchmark process (Linux reports ru_maxrss in KiB)."""

from __future__ import annotations

import resource

MIB = 2**20


def peak_rss() -> int:
    """Peak resident set size of this process in bytes."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_rss() -> int:
    """Resets the peak RSS to the current RSS (Linux: /proc/self/clear_refs) and returns it, so that memory freed
    before cannot hide later allocations; where that is not possible, the old peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return peak_rss()
