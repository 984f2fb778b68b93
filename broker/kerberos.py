"""SASL GSSAPI (Kerberos) on a broker, as Kafka's brokers run it (through the JDK): the
key of its service principal from a keytab, checking clients' tickets, and logging in to
other brokers with the same principal.

A listener's JAAS line for GSSAPI is Kafka's: ``com.sun.security.auth.module.
Krb5LoginModule required useKeyTab=true storeKey=true keyTab="/etc/kafka/kafka.keytab"
principal="kafka/broker1.example.com@EXAMPLE.COM";``. The principal's primary is the
service name clients ask for (``sasl.kerberos.service.name``, which must agree when
set). The Kerberos configuration is the system's (``/etc/krb5.conf``, or the file
``KRB5_CONFIG`` names, as for every MIT Kerberos program).

The exchanges are :mod:`protocol.kerberos`'s; a client that is in is ``User:<short
name>`` (:class:`~protocol.kerberos.ShortNamer`). The GSS-API calls read the keytab,
decrypt a ticket, or ask the KDC for another broker's ticket: they run in a worker
thread, never on the event loop. The ``gssapi`` package (MIT Kerberos' C library) is
imported only where GSSAPI is enabled: ``pip install 'headwater[gssapi]'``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from broker.config import ConfigError
from protocol.kerberos import (
    GSSAPI,
    AcceptorExchange,
    InitiatorExchange,
    KerberosName,
    ShortNamer,
)
from protocol.sasl import SaslError

__all__ = ["GssapiAcceptor", "GssapiExchange", "GssapiPeerLogin", "load_gssapi"]

T = TypeVar("T")


def load_gssapi() -> Any:
    """The ``gssapi`` module, or a ConfigError that says how to get it."""
    try:
        import gssapi  # noqa: PLC0415 - only where GSSAPI is enabled
    except ImportError as exc:
        raise ConfigError(
            f"GSSAPI is in sasl.enabled.mechanisms but the gssapi package cannot be imported "
            f"({exc}): pip install 'headwater[gssapi]' (it builds against MIT Kerberos: "
            "Debian's libkrb5-dev)"
        ) from None
    return gssapi


def _keytab_login(where: str, options: dict[str, str], service_name: str) -> tuple[str, str]:
    """(keytab, principal) of a Krb5LoginModule JAAS line, checked."""
    keytab, principal = options.get("keyTab", ""), options.get("principal", "")
    if not keytab or not principal:
        raise ConfigError(
            f'{where} needs keyTab="..." and principal="..." (Krb5LoginModule required '
            'useKeyTab=true storeKey=true keyTab="/path/kafka.keytab" '
            'principal="kafka/host@REALM";)'
        )
    try:
        name = KerberosName.parse(principal)
    except SaslError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if service_name and name.primary != service_name:
        raise ConfigError(
            f"{where}: principal {principal} is service {name.primary!r}, but "
            f"sasl.kerberos.service.name is {service_name!r}: clients ask for that"
        )
    return keytab, principal


def _keytab_credentials(gssapi: Any, where: str, keytab: str, principal: str) -> Any:
    """The acceptor credentials of ``principal`` from ``keytab``: read locally (no KDC),
    so a keytab without the principal's key stops the start, saying so."""
    try:
        return gssapi.Credentials(
            name=gssapi.Name(principal, gssapi.NameType.kerberos_principal),
            usage="accept",
            store={"keytab": keytab},
        )
    except gssapi.exceptions.GSSError as exc:
        raise ConfigError(
            f"{where}: the keytab {keytab} has no usable key for {principal}: {_why(exc)}"
        ) from None


async def _off_loop(gssapi: Any, call: Callable[[], T]) -> T:
    """A GSS-API call in a worker thread; its failure a SaslError in its own words."""
    try:
        return await asyncio.to_thread(call)
    except gssapi.exceptions.GSSError as exc:
        raise SaslError(f"{GSSAPI}: {_why(exc)}") from None


class GssapiAcceptor:
    """A listener's GSSAPI side: the service principal's credentials, read from the keytab
    once (a keytab that cannot be read stops the start), and the short-name rules."""

    def __init__(
        self, listener: str, options: dict[str, str], service_name: str, rules: list[str]
    ) -> None:
        gssapi = self._gssapi = load_gssapi()
        where = f"listener {listener}: the GSSAPI sasl.jaas.config"
        keytab, principal = _keytab_login(where, options, service_name)
        self._credentials = _keytab_credentials(gssapi, where, keytab, principal)
        try:
            # the realm of a name given without one: the default realm (krb5.conf's)
            bare = gssapi.Name("x", gssapi.NameType.kerberos_principal)
            default_realm = str(bare.canonicalize(gssapi.MechType.kerberos)).partition("@")[2]
        except gssapi.exceptions.GSSError:
            default_realm = ""  # none configured: DEFAULT maps no one (Kafka's too)
        try:
            self.namer = ShortNamer(rules, default_realm)
        except SaslError as exc:
            raise ConfigError(f"sasl.kerberos.principal.to.local.rules: {exc}") from None
        self.principal = principal

    def exchange(self) -> GssapiExchange:
        context = self._gssapi.SecurityContext(creds=self._credentials, usage="accept")
        return GssapiExchange(self._gssapi, AcceptorExchange(context))


class GssapiExchange:
    """One connection's GSSAPI login, its steps off the loop."""

    def __init__(self, gssapi: Any, machine: AcceptorExchange) -> None:
        self._gssapi = gssapi
        self._machine = machine

    @property
    def principal(self) -> str | None:
        return self._machine.principal

    async def step(self, message: bytes) -> bytes:
        """The answer to the client's next message (raises SaslError on a refusal)."""
        return await _off_loop(self._gssapi, lambda: self._machine.step(message))


class GssapiPeerLogin:
    """This broker's GSSAPI login to another broker: its own principal (the inter-broker
    listener's JAAS keytab and principal, as in Kafka), asking for ``<service>/<host>``.
    The keytab is checked at start without the KDC; tickets are taken from the KDC at
    the first login (off the loop) and kept in a memory cache of this process's, which
    MIT Kerberos renews from the keytab as they run out."""

    def __init__(self, listener: str, options: dict[str, str], service_name: str) -> None:
        gssapi = self._gssapi = load_gssapi()
        where = f"the inter-broker listener {listener}: the GSSAPI sasl.jaas.config"
        self._keytab, principal = _keytab_login(where, options, service_name)
        _keytab_credentials(gssapi, where, self._keytab, principal)
        self.service = service_name or KerberosName.parse(principal).primary
        self.principal = principal
        self._credentials: Any = None

    async def start(self, host: str) -> tuple[InitiatorExchange, bytes]:
        """A login to the broker at ``host``: the exchange and its first message."""
        gssapi = self._gssapi

        def begin() -> tuple[InitiatorExchange, bytes]:
            if self._credentials is None:  # (a TGT from the KDC, once)
                self._credentials = gssapi.Credentials(
                    name=gssapi.Name(self.principal, gssapi.NameType.kerberos_principal),
                    usage="initiate",
                    store={
                        "client_keytab": self._keytab,
                        "ccache": f"MEMORY:headwater-{self.principal}",
                    },
                )
            flags = gssapi.RequirementFlag
            context = gssapi.SecurityContext(
                name=gssapi.Name(f"{self.service}@{host}", gssapi.NameType.hostbased_service),
                creds=self._credentials,
                usage="initiate",
                flags=flags.mutual_authentication | flags.out_of_sequence_detection,
            )
            machine = InitiatorExchange(context)
            return machine, machine.first()

        return await _off_loop(gssapi, begin)

    async def step(self, machine: InitiatorExchange, answer: bytes) -> bytes | None:
        return await _off_loop(self._gssapi, lambda: machine.step(answer))


def _why(exc: Any) -> str:
    """A GSS-API error's own words, one line (its text names the Kerberos error)."""
    text = getattr(exc, "gen_message", None)
    words = text() if callable(text) else str(exc)
    return " ".join(str(words).split())
