"""SASL GSSAPI's pure parts (Kerberos, RFC 4752), as Kafka speaks them.

- A Kerberos principal's name, ``primary[/instance]@REALM`` (:class:`KerberosName`).
- Kafka's short names (``sasl.kerberos.principal.to.local.rules``, Kafka's
  KerberosShortNamer): a principal's user name is what the first rule that applies makes
  of it. ``DEFAULT`` is the principal's primary if its realm is the default one;
  ``RULE:[n:format](regex)s/pattern/replacement/g/L`` (Hadoop's auth_to_local syntax)
  applies to names of ``n`` components, formats them (``$0`` the realm, ``$1`` the
  primary, ``$2`` the instance), keeps them if the format matches ``regex`` whole, then
  substitutes (every match with ``g``, else the first) and lower-cases (``/L``) or
  upper-cases (``/U``).
- The security-layer negotiation after the Kerberos context is made (RFC 4752 section
  3.1): the server offers layers and a buffer size in a wrapped 4-byte message; the
  client answers with the layer it chose, its size and an authorization id. Kafka uses
  no security layer (TLS protects a SASL_SSL connection), so "none" is all either side
  offers or takes.

- The two sides' exchanges (:class:`InitiatorExchange`, :class:`AcceptorExchange`) as
  machines over a GSS-API security context they are given (python-gssapi's
  ``SecurityContext``, or a test's stand-in): which call each message takes, in Kafka's
  order. A client's: its initial context token (an AP-REQ); the broker's answer (the
  AP-REP: mutual authentication); an empty message; the broker's wrapped offer; the
  client's wrapped choice; the broker's empty answer.

Pure: no GSS-API library here (broker.kerberos and client.kerberos make the contexts and
run the steps off the event loop).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

from protocol.sasl import SaslError

__all__ = [
    "GSSAPI",
    "AcceptorExchange",
    "GssContext",
    "InitiatorExchange",
    "KerberosName",
    "ShortNamer",
    "layer_choice",
    "layer_offer",
    "parse_layer_choice",
    "parse_layer_offer",
]

GSSAPI = "GSSAPI"

NO_SECURITY_LAYER = 0x01
"""RFC 4752's bit for "no security layer", the only one Kafka offers or takes."""
_OFFERED_BUFFER = 65_536
"""The receive size in the offer: what Kafka's (the JDK's) GSSAPI server sends."""


@dataclass(frozen=True, slots=True)
class KerberosName:
    """``primary[/instance][@realm]``: ``kafka/broker1.example.com@EXAMPLE.COM``."""

    primary: str
    instance: str | None
    realm: str | None

    @classmethod
    def parse(cls, text: str) -> KerberosName:
        match = re.fullmatch(r"([^/@]+)(?:/([^/@]+))?(?:@([^/@]+))?", text)
        if match is None:
            raise SaslError(f"{text!r} is not a Kerberos principal (primary[/instance]@REALM)")
        return cls(match[1], match[2], match[3])

    def __str__(self) -> str:
        text = self.primary if self.instance is None else f"{self.primary}/{self.instance}"
        return text if self.realm is None else f"{text}@{self.realm}"


_RULE = re.compile(
    r"\s*(?:(?P<default>DEFAULT)|RULE:\[(?P<n>\d+):(?P<format>[^\]]*)\]"
    r"(?:\((?P<match>[^)]*)\))?"
    r"(?:s/(?P<pattern>[^/]*)/(?P<replacement>[^/]*)/(?P<g>g)?)?/?(?P<case>[LU])?)\s*"
)


@dataclass(frozen=True, slots=True)
class _Rule:
    text: str
    default: bool
    components: int = 0
    format: str = ""
    match: re.Pattern[str] | None = None
    pattern: re.Pattern[str] | None = None
    replacement: tuple[str | int, ...] = ()
    """Literal text and group numbers, in order (Java's replacement syntax, parsed)."""
    every: bool = False
    case: str | None = None

    def apply(self, name: KerberosName, default_realm: str) -> str | None:
        if self.default:
            result = name.primary if name.realm == default_realm else None
        else:
            parts = [name.primary] if name.instance is None else [name.primary, name.instance]
            if len(parts) != self.components:
                return None
            values = [name.realm or "", *parts]
            # (every $n was checked against the component count when the rule was read)
            base = re.sub(r"\$(\d+)", lambda m: values[int(m[1])], self.format)
            if self.match is not None and not self.match.fullmatch(base):
                return None
            result = base
            if self.pattern is not None:
                result = self.pattern.sub(self._replaced, base, count=0 if self.every else 1)
        if result is None:
            return None
        if "@" in result or "/" in result:
            raise SaslError(f"the rule {self.text} makes {name} into {result!r}, not a user name")
        if self.case == "L":
            return result.lower()
        if self.case == "U":
            return result.upper()
        return result

    def _replaced(self, match: re.Match[str]) -> str:
        return "".join(p if isinstance(p, str) else match.group(p) or "" for p in self.replacement)


def _checked_format(text: str, components: int) -> str:
    """A rule's format: ``$0`` (the realm) to ``$<components>``, Kafka's."""
    for dollar in re.finditer(r"\$(\d*)", text):
        if not dollar[1]:
            raise SaslError(f"a $ without a number in the format {text!r}")
        if int(dollar[1]) > components:
            raise SaslError(
                f"the format {text!r} names ${dollar[1]}, but its names have {components} "
                "component(s) ($0 is the realm)"
            )
    return text


def _java_replacement(text: str, pattern: re.Pattern[str]) -> tuple[str | int, ...]:
    """Java's Matcher replacement (Kafka's rules are Java regexes): ``$n`` a group (as
    many digits as name a group), ``${name}`` a named one, a backslash and a character
    that character; checked against ``pattern``'s groups now, not at a login."""
    parts: list[str | int] = []
    literal = ""
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            if i + 1 == len(text):
                raise SaslError(f"the replacement {text!r} ends in a lone backslash")
            literal += text[i + 1]
            i += 2
        elif char == "$":
            if text[i + 1 : i + 2] == "{":
                end = text.find("}", i)
                group = text[i + 2 : end] if end > 0 else ""
                if group not in pattern.groupindex:
                    raise SaslError(f"the replacement {text!r} names no group of the pattern")
                number = pattern.groupindex[group]
                i = end + 1
            else:
                digits = re.match(r"\d+", text[i + 1 :])
                if digits is None or int(digits[0][0]) > pattern.groups:
                    raise SaslError(
                        f"the replacement {text!r} refers to a group the pattern does not have"
                    )
                length = 1
                # Java: more digits while they still name a group
                while length < len(digits[0]) and int(digits[0][: length + 1]) <= pattern.groups:
                    length += 1
                number = int(digits[0][:length])
                i += 1 + length
            if literal:
                parts.append(literal)
                literal = ""
            parts.append(number)
        else:
            literal += char
            i += 1
    if literal:
        parts.append(literal)
    return tuple(parts)


class ShortNamer:
    """Kafka's KerberosShortNamer: the user name of a principal by the first rule that
    applies (``sasl.kerberos.principal.to.local.rules``, default ``DEFAULT``)."""

    def __init__(self, rules: list[str], default_realm: str) -> None:
        self.default_realm = default_realm
        self._rules = [_parse_rule(text) for text in rules]  # (none: none applies, Kafka's)

    def short_name(self, principal: str) -> str:
        name = KerberosName.parse(principal)
        if name.realm is None:
            return name.primary
        for rule in self._rules:
            result = rule.apply(name, self.default_realm)
            if result is not None:
                return result
        raise SaslError(f"no sasl.kerberos.principal.to.local.rules rule applies to {principal}")

    @property
    def rules(self) -> list[str]:
        return [rule.text for rule in self._rules]


def _parse_rule(text: str) -> _Rule:
    match = _RULE.fullmatch(text)
    if match is None:
        raise SaslError(
            f"{text!r} is not a principal-to-local rule: DEFAULT, or "
            "RULE:[n:format](regex)s/pattern/replacement/g/L (Kafka's and Hadoop's syntax)"
        )
    if match["default"]:
        return _Rule(text.strip(), True)
    components = int(match["n"])
    try:
        pattern = re.compile(match["pattern"]) if match["pattern"] is not None else None
        return _Rule(
            text.strip(),
            False,
            components,
            _checked_format(match["format"], components),
            re.compile(match["match"]) if match["match"] is not None else None,
            pattern,
            _java_replacement(match["replacement"] or "", pattern) if pattern else (),
            bool(match["g"]),
            match["case"],
        )
    except re.error as exc:
        raise SaslError(f"{text!r}: its regular expression does not compile: {exc}") from None
    except SaslError as exc:
        raise SaslError(f"{text!r}: {exc}") from None


def layer_offer() -> bytes:
    """The server's offer (to be wrapped): no security layer, and its receive size."""
    return bytes([NO_SECURITY_LAYER]) + _OFFERED_BUFFER.to_bytes(3, "big")


def parse_layer_offer(message: bytes) -> int:
    """The server's offer (unwrapped): its receive size; "no security layer" must be
    among its layers."""
    if len(message) != 4:
        raise SaslError(f"GSSAPI: the server's security-layer offer is {len(message)} bytes, not 4")
    if not message[0] & NO_SECURITY_LAYER:
        raise SaslError("GSSAPI: the server requires a security layer, which Kafka does not use")
    return int.from_bytes(message[1:4], "big")


def layer_choice(max_size: int, authzid: str = "") -> bytes:
    """The client's answer (to be wrapped): no security layer."""
    return bytes([NO_SECURITY_LAYER]) + max_size.to_bytes(3, "big") + authzid.encode()


def parse_layer_choice(message: bytes) -> str:
    """The client's answer (unwrapped): its authorization id; it must take no layer."""
    if len(message) < 4:
        raise SaslError(f"GSSAPI: the client's security-layer choice is {len(message)} bytes")
    if message[0] != NO_SECURITY_LAYER:
        raise SaslError(
            f"GSSAPI: the client chose security layer {message[0]:#x}; only 'none' (0x1) is "
            "offered (Kafka's)"
        )
    try:
        return message[4:].decode()
    except UnicodeDecodeError:
        raise SaslError("GSSAPI: the authorization id is not UTF-8") from None


class GssContext(Protocol):
    """What the exchanges use of a GSS-API security context (python-gssapi's names)."""

    @property
    def complete(self) -> bool: ...

    @property
    def initiator_name(self) -> Any: ...

    def step(self, token: bytes | None = None) -> bytes | None: ...

    def wrap(self, message: bytes, encrypt: bool) -> Any: ...  # its .message

    def unwrap(self, message: bytes) -> Any: ...  # its .message


class InitiatorExchange:
    """A client's side: :meth:`first`, then :meth:`step` with each of the broker's answers
    until it returns None."""

    def __init__(self, context: GssContext) -> None:
        self._context = context
        self._stage = "context"

    def first(self) -> bytes:
        return self._context.step(None) or b""

    def step(self, answer: bytes) -> bytes | None:
        context = self._context
        if self._stage == "context":
            token = context.step(answer)
            if context.complete:
                self._stage = "established"
            return token or b""  # (complete: an empty message, for the broker's offer)
        if self._stage == "established":
            parse_layer_offer(bytes(context.unwrap(answer).message))
            self._stage = "chosen"
            # no layer, so no buffer (RFC 4752: 0); the authorization id is our own
            # principal, as Kafka's Java client sends it
            choice = layer_choice(0, str(context.initiator_name))
            return bytes(context.wrap(choice, False).message)
        if answer:
            raise SaslError(f"{GSSAPI}: the broker sent a message after the exchange ended")
        return None


class AcceptorExchange:
    """A broker's side: :meth:`step` with each client message until :attr:`principal` (the
    client's Kerberos principal) is set. The authorization id a client sends is not
    used, as by Kafka (whose server takes the Kerberos principal; kafka-python, for one,
    sends the service's name there)."""

    def __init__(self, context: GssContext) -> None:
        self._context = context
        self._stage = "context"
        self.principal: str | None = None

    def step(self, message: bytes) -> bytes:
        context = self._context
        if self._stage == "context":
            token = context.step(message)
            if not context.complete:
                return token or b""
            if token:  # the AP-REP (mutual authentication): the client answers it empty
                self._stage = "established"
                return token
            self._stage = "offered"  # nothing to send back: the offer at once (the JDK's)
            return bytes(context.wrap(layer_offer(), False).message)
        if self._stage == "established":
            if message:
                raise SaslError(f"{GSSAPI}: the client sent data where an empty message is due")
            self._stage = "offered"
            return bytes(context.wrap(layer_offer(), False).message)
        if self._stage == "offered":
            parse_layer_choice(bytes(context.unwrap(message).message))
            self._stage = "done"
            self.principal = str(context.initiator_name)
            return b""
        raise SaslError(f"{GSSAPI}: a message after the exchange ended")
