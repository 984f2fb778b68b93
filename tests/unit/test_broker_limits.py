"""The open files limit: the daemon raises its soft limit to the hard one at start
(broker.main.raise_open_files_limit), and a log that cannot be opened for want of
descriptors says what to raise, not "check the disk"."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

resource = pytest.importorskip("resource")

_OPEN_LOGS = textwrap.dedent(
    """
    import resource, sys
    from pathlib import Path
    from broker.log import Log
    from broker.main import raise_open_files_limit
    from protocol.errors import KafkaStorageError
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))  # as a small default would
    if sys.argv[1] == "raised":
        print("limit", *raise_open_files_limit())
    root = Path(sys.argv[2])
    logs = []
    try:
        for i in range(40):  # three descriptors each: 120, past 64
            logs.append(Log.open(root / f"t-{i}"))
    except KafkaStorageError as exc:
        print("refused", len(logs), exc)
    else:
        print("opened", len(logs))
    """
)


def _run(mode: str, logs: Path) -> str:
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", _OPEN_LOGS, mode, str(logs)],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr


def test_the_broker_takes_the_hard_limit_and_a_shortage_says_what_to_raise(
    tmp_path: Path,
) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 200:
        pytest.skip(f"the hard limit here ({hard}) leaves nothing to raise")
    refused = _run("low", tmp_path / "low")
    assert refused.startswith("refused"), refused
    assert "too many open files" in refused and "ulimit -n" in refused
    assert "check the disk" not in refused
    assert _run("raised", tmp_path / "raised") == "opened 40"
