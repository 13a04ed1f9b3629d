"""The allocator setting of the command's processes: freed activation-sized blocks are
reused, not page-faulted in again."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import json, resource, sys
import torch
from adaptanon.engines import reuse_freed_memory
applied = reuse_freed_memory() if sys.argv[1] == "on" else False
def faults_of_one_block():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.empty(40 << 20, dtype=torch.uint8)  # 40 MiB: above glibc's mmap threshold
    block.fill_(1)
    del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults_of_one_block()
print(json.dumps({"applied": applied, "again": reuse_freed_memory() if applied else False,
                  "faults": min(faults_of_one_block() for _ in range(3))}))
"""


def probe(setting: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, setting], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    plain, reused = probe("off"), probe("on")
    assert reused["applied"] and reused["again"]
    pages = (40 << 20) // 4096
    assert plain["faults"] > pages // 2  # each new block is mapped and faulted in afresh
    assert reused["faults"] < pages // 20


def test_the_environment_switch_leaves_the_allocator_alone(monkeypatch):
    """With the switch at 0 nothing is set (probed in a process of its own)."""
    monkeypatch.setenv("ADAPTANON_REUSE_FREED_MEMORY", "0")
    off = probe("on")
    assert not off["applied"]
    assert off["faults"] > (40 << 20) // 4096 // 2
