"""A client's SASL GSSAPI (Kerberos) login, as Kafka's clients make it (the exchange is
:mod:`protocol.kerberos`'s).

The client's Kerberos credentials are its environment's, as for kafka-python, aiokafka
and librdkafka: the ticket cache ``kinit`` filled (``KRB5CCNAME``), or a client keytab
that MIT Kerberos takes tickets with by itself (``KRB5_CLIENT_KTNAME``). Or, as Kafka's
Java clients' ``Krb5LoginModule useKeyTab=true keyTab=... principal=...``, a keytab and
principal of the client's own (``sasl_kerberos_keytab``, ``sasl_kerberos_principal``):
its tickets are then kept in a memory cache of the process's, not the environment's.
The Kerberos configuration is ``/etc/krb5.conf`` or ``KRB5_CONFIG``. The broker's
principal is ``<sasl_kerberos_service_name>/<host>``: the host connected to, or
``sasl_kerberos_domain_name``.

The GSS-API calls may ask the KDC for a service ticket over the network: the connection
runs them in a worker thread, never on the application's event loop. The ``gssapi``
package (MIT Kerberos' C library) is imported only for a GSSAPI login: ``pip install
'headwater[gssapi]'``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from client.errors import ConfigurationError
from protocol.kerberos import GSSAPI, InitiatorExchange
from protocol.sasl import SaslError

__all__ = ["GssapiClient", "load_gssapi"]

T = TypeVar("T")


def load_gssapi() -> Any:
    """The ``gssapi`` module, or a ConfigurationError that says how to get it."""
    try:
        import gssapi  # noqa: PLC0415 - only for a GSSAPI login
    except ImportError as exc:
        raise ConfigurationError(
            f"sasl_mechanism='GSSAPI' needs the gssapi package, which cannot be imported "
            f"({exc}): pip install 'headwater[gssapi]' (it builds against MIT Kerberos: "
            "Debian's libkrb5-dev)"
        ) from None
    return gssapi


class GssapiClient:
    """One GSSAPI login: :meth:`first`, then :meth:`step` with each of the broker's
    answers until it returns None. Each call may block (the KDC): off the loop."""

    def __init__(
        self, service_name: str, host: str, keytab: str | None = None, principal: str | None = None
    ) -> None:
        """``keytab`` and ``principal``: the client's own (else the environment's
        credentials)."""
        gssapi = self._gssapi = load_gssapi()
        self.target = f"{service_name}@{host}"

        def begin() -> InitiatorExchange:
            credentials = None
            if keytab is not None:
                credentials = gssapi.Credentials(
                    name=gssapi.Name(principal, gssapi.NameType.kerberos_principal),
                    usage="initiate",
                    # one cache per keytab and principal, in this process's memory
                    store={"client_keytab": keytab, "ccache": f"MEMORY:{principal}:{keytab}"},
                )
            flags = gssapi.RequirementFlag
            context = gssapi.SecurityContext(
                name=gssapi.Name(self.target, gssapi.NameType.hostbased_service),
                creds=credentials,
                usage="initiate",
                flags=flags.mutual_authentication | flags.out_of_sequence_detection,
            )
            return InitiatorExchange(context)

        self._machine = self._call(begin)

    def first(self) -> bytes:
        """The initial context token (asks the KDC for the broker's ticket)."""
        return self._call(self._machine.first)

    def step(self, answer: bytes) -> bytes | None:
        """The message for the broker's ``answer``; None once the login is done."""
        return self._call(lambda: self._machine.step(answer))

    def _call(self, step: Callable[[], T]) -> T:
        try:
            return step()
        except self._gssapi.exceptions.GSSError as exc:
            text = getattr(exc, "gen_message", None)
            words = " ".join(str(text() if callable(text) else exc).split())
            raise SaslError(
                f"{GSSAPI}: {words} (the broker's principal: {self.target}; are there "
                "Kerberos credentials: kinit, or KRB5_CLIENT_KTNAME naming a keytab?)"
            ) from None
