"""A private MIT Kerberos KDC for tests: its own realm, database, configuration and free
loopback port in a temporary directory, started (``krb5kdc -n``) and killed by pid.

The programs are Debian's krb5-kdc and krb5-admin-server, unpacked by ``make test`` into
``.venv/kdc`` (``HEADWATER_KDC_ROOT`` elsewhere) rather than installed: installing them
would enable the packages' system services and write ``/etc/krb5.conf``. Where they are
not unpacked, the installed ones (``/usr/sbin``) are used.

Its ``krb5.conf`` turns off what would reach outside (DNS for the KDC and realm, reverse
lookups, hostname canonicalization), so ``kafka/127.0.0.1@HEADWATER.TEST`` is the
principal a client asks for when it connects to 127.0.0.1. Processes find it through
``KRB5_CONFIG`` (:attr:`Kdc.env`)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

REALM = "HEADWATER.TEST"
_ROOT = Path(
    os.environ.get("HEADWATER_KDC_ROOT") or Path(__file__).resolve().parents[1] / ".venv" / "kdc"
)
_SBIN = (str(_ROOT / "usr" / "sbin"), "/usr/sbin", "/sbin")


def _program(name: str) -> str | None:
    return shutil.which(name, path=os.pathsep.join([*_SBIN, os.environ.get("PATH", "")]))


def _module_dir() -> str:
    """kdc.conf's ``db_module_dir``: the unpacked database plugin's (db2.so), if the
    programs are unpacked ones (their built-in path is the installed package's)."""
    found = sorted(_ROOT.glob("usr/lib/*/krb5/plugins/kdb/db2.so"))
    return f"[dbmodules]\n  db_module_dir = {found[0].parent}\n" if found else ""


def kdc_or_skip() -> None:
    """Skip the test where the KDC's programs or the gssapi package are missing."""
    for name in ("krb5kdc", "kdb5_util", "kadmin.local"):
        if _program(name) is None:
            pytest.skip(f"{name} is missing: apt-get install krb5-kdc krb5-admin-server")
    pytest.importorskip("gssapi", reason="pip install 'headwater[gssapi]'")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Kdc:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.config = directory / "krb5.conf"
        self.config.write_text(
            f"""[libdefaults]
  default_realm = {REALM}
  dns_lookup_kdc = false
  dns_lookup_realm = false
  dns_canonicalize_hostname = false
  rdns = false
  udp_preference_limit = 1
[realms]
  {REALM} = {{
    kdc = 127.0.0.1:{self.port}
  }}
"""
        )
        (directory / "kdc.conf").write_text(
            f"""[kdcdefaults]
  kdc_ports = {self.port}
  kdc_tcp_ports = {self.port}
[realms]
  {REALM} = {{
    database_name = {directory}/principal
    key_stash_file = {directory}/stash
    acl_file = {directory}/kadm5.acl
    max_life = 1h
  }}
[logging]
  kdc = FILE:{directory}/kdc.log
{_module_dir()}"""
        )
        self.env = {
            "KRB5_CONFIG": str(self.config),
            "KRB5_KDC_PROFILE": str(directory / "kdc.conf"),
        }
        self._process: subprocess.Popen[bytes] | None = None

    def _run(self, *argv: str) -> str:
        program = _program(argv[0])
        assert program is not None, argv[0]
        done = subprocess.run(
            [program, *argv[1:]],
            env={**os.environ, **self.env},
            capture_output=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{argv}: {done.stderr.decode(errors='replace')}")
        return done.stdout.decode(errors="replace")

    def start(self) -> Kdc:
        self._run("kdb5_util", "create", "-s", "-r", REALM, "-P", "test-master-key")
        program = _program("krb5kdc")
        assert program is not None
        with (self.directory / "krb5kdc.err").open("wb") as errors:
            self._process = subprocess.Popen(
                [program, "-n", "-r", REALM],
                env={**os.environ, **self.env},
                stdout=subprocess.DEVNULL,
                stderr=errors,
            )
        deadline = time.monotonic() + 10
        while True:  # serving once its TCP port takes connections
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.stop()  # (still running past the deadline: ours to end)
                    raise RuntimeError(
                        f"krb5kdc did not start: {(self.directory / 'krb5kdc.err').read_text()}"
                    ) from None
                time.sleep(0.05)

    def principal(self, name: str) -> Path:
        """Make ``name`` (``alice``, ``kafka/127.0.0.1``) with a random key; the keytab
        holding its key."""
        keytab = self.directory / (name.replace("/", "_") + ".keytab")
        self._run("kadmin.local", "-r", REALM, "-q", f"addprinc -randkey {name}")
        self._run("kadmin.local", "-r", REALM, "-q", f"ktadd -k {keytab} {name}")
        return keytab

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)  # only the KDC this test started
            self._process.wait(10)
