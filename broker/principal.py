"""The principal of a TLS client certificate, spelled as Kafka spells it.

Kafka's default SSL principal is ``User:`` + ``X500Principal.getName()``: the subject DN
in RFC 2253 form, most specific part first, as Java writes it. ACLs match principals as
strings, so the spelling must be Java's exactly:

- the attributes Java has keywords for (CN, C, L, ST, O, OU, STREET, DC, UID) are
  ``KEYWORD=value``; any other (emailAddress, serialNumber...) is its dotted OID and
  ``#`` with the hex of its DER encoding (``1.2.840.113549.1.9.1=#16...``);
- in a value, ``, = + < > # ; " \\`` are escaped with a backslash, and so is every space
  at its start or end.

The DER comes from the certificate itself (``getpeercert(binary_form=True)``): a few
lines of DER walking here, so the broker needs no X.509 library.
"""

from __future__ import annotations

__all__ = ["certificate_principal", "subject_dn"]

_KEYWORDS = {
    "2.5.4.3": "CN",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.9": "STREET",
    "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.1": "UID",
}
_STRINGS = {0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii", 0x14: "latin-1", 0x1E: "utf-16-be"}
"""DER string types and how their bytes read (UTF8, Printable, IA5, T61, BMP)."""
_ESCAPED = ',=+<>#;"\\'


class _Der:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def tlv(self, pos: int) -> tuple[int, int, int]:
        """(tag, start of the value, end of the value) of the element at ``pos``."""
        data = self.data
        tag, length = data[pos], data[pos + 1]
        pos += 2
        if length & 0x80:
            count = length & 0x7F
            length = int.from_bytes(data[pos : pos + count], "big")
            pos += count
        if pos + length > len(data):
            raise ValueError("a DER element runs past the end")
        return tag, pos, pos + length

    def children(self, start: int, end: int) -> list[tuple[int, int, int, int]]:
        """(tag, element start, value start, value end) of each element in a value."""
        out = []
        pos = start
        while pos < end:
            tag, value, stop = self.tlv(pos)
            out.append((tag, pos, value, stop))
            pos = stop
        return out


def _oid(raw: bytes) -> str:
    parts = [raw[0] // 40, raw[0] % 40] if raw[0] < 80 else [2, raw[0] - 80]
    value = 0
    for byte in raw[1:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    return ".".join(map(str, parts))


def _escape(value: str) -> str:
    out = "".join(f"\\{c}" if c in _ESCAPED else c for c in value)
    lead = len(out) - len(out.lstrip(" "))
    if lead == len(out):
        return "\\ " * lead
    trail = len(out) - len(out.rstrip(" "))
    return "\\ " * lead + out[lead : len(out) - trail] + "\\ " * trail


def subject_dn(certificate: bytes) -> str:
    """The subject of a DER certificate as Java's ``X500Principal.getName()`` gives it."""
    der = _Der(certificate)
    _, cert_start, cert_end = der.tlv(0)
    tbs = der.children(cert_start, cert_end)[0]
    fields = der.children(tbs[2], tbs[3])
    if fields[0][0] == 0xA0:  # [0] version
        fields = fields[1:]
    _, _, subject_start, subject_end = fields[4]  # serial, signature, issuer, validity
    rdns = []
    for _, _, set_start, set_end in der.children(subject_start, subject_end):
        parts = []
        for _, _, seq_start, seq_end in der.children(set_start, set_end):
            (_, _, oid_start, oid_end), (tag, element, value, end) = der.children(
                seq_start, seq_end
            )[:2]
            oid = _oid(der.data[oid_start:oid_end])
            keyword = _KEYWORDS.get(oid)
            if keyword is not None and tag in _STRINGS:
                text = der.data[value:end].decode(_STRINGS[tag], errors="replace")
                parts.append(f"{keyword}={_escape(text)}")
            else:
                parts.append(f"{oid}=#{der.data[element:end].hex()}")
        rdns.append("+".join(parts))
    return ",".join(reversed(rdns))


def certificate_principal(certificate: bytes | None) -> str | None:
    """``User:<subject DN>`` of a peer's DER certificate (None without one, or if it
    cannot be read)."""
    if not certificate:
        return None
    try:
        return f"User:{subject_dn(certificate)}"
    except (ValueError, IndexError):
        return None
