"""``make bench-profile``'s pieces: py-spy's collapsed stacks summed by function, the
flame graph drawn from them, the index it writes, and a real sampling of a child process
that spends its time in one known function."""

import subprocess
import sys
import time
from pathlib import Path
from xml.etree import ElementTree

import pytest

from bench.compare import flame, profiles
from bench.compare.table import NotAvailable

SVG = "{http://www.w3.org/2000/svg}"
COLLAPSED = """\
<module> (x.py:1);main (x.py:9);encode (codec.py:40) 30
<module> (x.py:1);main (x.py:9);encode (codec.py:41) 20
<module> (x.py:1);main (x.py:10);send (net.py:7) 25
<module> (x.py:1);main (x.py:11) 5
garbage line
"""


def test_top_functions_sums_own_samples_by_function_not_line() -> None:
    total, top = profiles.top_functions(COLLAPSED)
    assert total == 80
    assert top == [("encode (codec.py)", 50), ("send (net.py)", 25), ("main (x.py)", 5)]


def test_the_index_shows_figures_top_functions_and_why_a_profile_is_missing(
    tmp_path: Path,
) -> None:
    sampled = profiles.Profile("produce-rf1", "client", tmp_path / "a.svg", tmp_path / "a.txt")
    sampled.samples, sampled.top = profiles.top_functions(COLLAPSED)
    missing = profiles.Profile("produce-rf1", "broker-1", tmp_path / "b.svg", tmp_path / "b.txt")
    missing.error = "py-spy failed: Permission denied"
    figures = {
        "produce-rf1": ("rec/s", [135319.0]),
        "e2e-rf1": ("us p50, p99", [1024.0, NotAvailable("x")]),
    }
    index = profiles.render_index(figures, [sampled, missing], "2 cores")
    assert "## produce-rf1: 135,319 rec/s" in index
    assert "| 62.5% | `encode (codec.py)` |" in index
    assert "[flame graph](a.svg); collapsed stacks: `a.txt`" in index
    assert "**broker-1**: n/a (py-spy failed: Permission denied)" in index
    assert "## e2e-rf1: p50 1,024, p99 n/a (x) us" in index


def test_without_py_spy_each_profile_says_so(tmp_path: Path) -> None:
    with profiles.sampling(None, "w", {"client": 1}, tmp_path) as sampled:
        pass
    assert sampled[0].error is not None and "not installed" in sampled[0].error


def test_sampling_finds_the_function_a_process_spends_its_time_in(tmp_path: Path) -> None:
    tool = profiles.py_spy()
    if tool is None:
        pytest.skip("py-spy is not installed")
    spin = "def spin_here():\n    while True:\n        sum(range(1000))\nspin_here()\n"
    child = subprocess.Popen([sys.executable, "-c", spin])
    try:
        with profiles.sampling(tool, "spin", {"child": child.pid}, tmp_path) as sampled:
            time.sleep(1.5)
    finally:
        child.kill()
        child.wait()
    (profile,) = sampled
    if profile.error is not None and "ermission" in profile.error:
        pytest.skip(f"py-spy may not read other processes here: {profile.error}")
    assert profile.error is None
    assert profile.samples > 50  # 200 Hz for 1.5 s of a busy process
    assert profile.top[0][0].startswith("spin_here (")
    assert "spin_here" in profile.svg.read_text()
    assert "spin_here" in profile.stacks.read_text()


def _boxes(svg: str) -> dict[str, tuple[float, float, float]]:
    """Frame name -> (x, y, width) of its box, from the tooltips."""
    boxes = {}
    for group in ElementTree.fromstring(svg).iter(f"{SVG}g"):
        title = group.find(f"{SVG}title")
        rect = group.find(f"{SVG}rect")
        assert title is not None and title.text is not None and rect is not None
        name = title.text.rpartition(" (")[0]
        boxes[name] = (
            float(rect.get("x", 0)),
            float(rect.get("y", 0)),
            float(rect.get("width", 0)),
        )
    return boxes


def test_a_flame_graph_box_is_as_wide_as_its_samples_and_above_its_caller() -> None:
    svg = flame.render(COLLAPSED, "produce-rf1: client <&>")
    boxes = _boxes(svg)  # parses: the title's <&> is escaped
    width = flame.WIDTH
    assert boxes["<module> (x.py:1)"][2] == pytest.approx(width)
    assert boxes["main (x.py:9)"][2] == pytest.approx(width * 50 / 80)
    assert boxes["main (x.py:10)"][2] == pytest.approx(width * 25 / 80)
    # siblings side by side in name order ("x.py:10" < "x.py:11" < "x.py:9"), callees one
    # row above their caller
    assert boxes["main (x.py:10)"][0] == 0
    assert boxes["main (x.py:9)"][0] == pytest.approx(width * 30 / 80)
    assert boxes["encode (codec.py:40)"][1] == boxes["main (x.py:9)"][1] - flame.ROW
    assert "garbage" not in svg


def test_a_stack_deeper_than_pythons_recursion_limit_is_drawn() -> None:
    deep = ";".join(f"f{i} (x.py:{i})" for i in range(sys.getrecursionlimit() + 500)) + " 3\n"
    svg = flame.render(deep, "deep")
    assert svg.count("<g>") == sys.getrecursionlimit() + 500


def test_py_spys_error_line_is_the_reason_not_its_backtrace() -> None:
    printed = b"\nError: Failed to find python version from target process\n\nStack backtrace:\n"
    printed += b"   6: std::sys::thread::unix::Thread::new::thread_start\n"
    assert profiles._reason(printed) == "Error: Failed to find python version from target process"
    assert profiles._reason(b"Permission Denied: try sudo\n") == "Permission Denied: try sudo"
    assert profiles._reason(b"") == ""


def test_a_cluster_that_will_not_start_gives_every_figure_n_a(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_args: object) -> None:
        raise RuntimeError("ZooKeeper would not start")

    monkeypatch.setattr(profiles.headwater, "BenchCluster", refuse)
    figures, sampled = profiles.run_profiles(profiles.QUICK, tmp_path, str(tmp_path))
    assert sampled == []
    assert set(figures) == {
        "produce-rf1",
        "produce-send-batch-rf1",
        "consume",
        "e2e-rf1",
        "broker-alone",
    } | {
        "produce-rf3",
        "e2e-rf3",
    }
    _, e2e_values = figures["e2e-rf3"]
    assert len(e2e_values) == 2 and all(isinstance(v, NotAvailable) for v in e2e_values)
    index = profiles.render_index(figures, sampled, "2 cores")  # p50 and p99 both n/a
    assert "## e2e-rf3: p50 n/a (RuntimeError('ZooKeeper would not start'))" in index
