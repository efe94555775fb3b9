"""`return_freed_memory`: what worker threads freed leaves the process's resident memory (glibc keeps it otherwise)."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHILD = """
import os, threading
from curate.data.heap import return_freed_memory

def work():
    blocks = [bytes(2048) for _ in range(150_000)]  # 300 MB in malloc'd blocks of a thread's arena
    keep.append(blocks[-1])  # one survivor: the arena cannot simply shrink from its top
    del blocks

keep = []
thread = threading.Thread(target=work)
thread.start()
thread.join()
rss = lambda: int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') >> 20
before = rss()
trimmed = return_freed_memory()
print(before, rss(), trimmed)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's")
def test_memory_freed_by_a_thread_goes_back_to_the_system():
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True).stdout.split()
    before, after, trimmed = int(out[0]), int(out[1]), out[2] == "True"
    assert trimmed
    assert before - after > 150, (before, after)  # most of the 300 MB the thread freed
