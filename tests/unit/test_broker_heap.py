"""The broker keeps large frames' memory for the next ones (broker.main.reuse_freed_heap):
without it, glibc hands a burst of freed 1 MiB produce frames back to the kernel and the
next burst faults every page in again."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

_BURSTS = textwrap.dedent(
    """
    import resource, sys
    from broker.main import reuse_freed_heap
    if sys.argv[1] == "tuned" and not reuse_freed_heap():
        print("no-glibc")
        sys.exit()
    chunk = bytes(256 * 1024)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(100):
        frames = []
        for _ in range(3):  # three 1 MiB frames in flight, gathered from socket reads
            frame = bytearray()
            for _ in range(4):
                frame += chunk
            frames.append(frame)
        del frames  # all answered
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _page_faults(mode: str) -> str:
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", _BURSTS, mode],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip()


def test_bursts_of_large_frames_reuse_the_heap_instead_of_faulting_it_in_again() -> None:
    tuned = _page_faults("tuned")
    if tuned == "no-glibc":
        pytest.skip("no glibc malloc here: the broker leaves the allocator as it is")
    default = int(_page_faults("default"))
    if default < 100 * 3 * 256 // 2:
        # another allocator preloaded, malloc tunables or huge pages: the default does not
        # fault the bursts in here, so there is nothing for the setting to show
        pytest.skip(f"the default allocator faulted only {default} pages in here")
    assert int(tuned) < default // 10
