"""Build raw Ethernet frames (IPv4/IPv6 with extension headers, TCP/UDP, VLAN tags) for
BPF_PROG_TEST_RUN, well-formed or with chosen length fields that lie (to test the parser).

>>> f = frame(ipv4("198.18.0.1", "198.18.0.2", tcp(1234, 80)))
>>> len(f), f[12:14].hex()
(54, '0800')
>>> p = frame(ipv6("2001:2::1", "2001:2::2", udp(1, 2), ext=[(HOPOPTS, bytes(6))]))
>>> len(p), p[14 + 6], p[14 + 40]   # next header: hop-by-hop, then UDP
(70, 0, 17)
"""

from __future__ import annotations

import ipaddress
import struct

ETH_P_IP, ETH_P_IPV6, ETH_P_8021Q, ETH_P_8021AD = 0x0800, 0x86DD, 0x8100, 0x88A8
PROTO_TCP, PROTO_UDP, PROTO_ICMP = 6, 17, 1
HOPOPTS, ROUTING, FRAGMENT, DSTOPTS = 0, 43, 44, 60  # IPv6 extension header types


def tcp(
    sport: int, dport: int, payload: bytes = b"", flags: int = 0x02, doff: int = 5
) -> tuple[int, bytes]:
    """A TCP segment; ``flags`` 0x02 is a SYN (a new connection), 0x10 an ACK; ``doff`` is
    the data offset in 32-bit words (5: no options; the header is padded to it when larger)."""
    hdr = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, (doff & 15) << 4, flags, 65535, 0, 0)
    return PROTO_TCP, hdr + b"\x01" * max(0, doff * 4 - 20) + payload


def udp(
    sport: int, dport: int, payload: bytes = b"", length: int | None = None
) -> tuple[int, bytes]:
    """A UDP datagram; ``length`` overrides its length field."""
    n = 8 + len(payload) if length is None else length
    return PROTO_UDP, struct.pack("!HHHH", sport, dport, n, 0) + payload


def ipv4(
    src: str,
    dst: str,
    l4: tuple[int, bytes],
    options: bytes = b"",
    frag_off: int = 0,
    total_length: int | None = None,
) -> tuple[int, bytes]:
    """An IPv4 packet; ``total_length`` overrides its total-length field."""
    proto, body = l4
    ihl = 5 + len(options) // 4
    hdr = struct.pack(
        "!BBHHHBBH4s4s",
        4 << 4 | ihl,
        0,
        ihl * 4 + len(body) if total_length is None else total_length,
        1,
        frag_off,
        64,
        proto,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    return ETH_P_IP, hdr + options + body


def ipv6(
    src: str,
    dst: str,
    l4: tuple[int, bytes],
    ext: list[tuple[int, bytes]] | tuple = (),
    payload_length: int | None = None,
    version: int = 6,
) -> tuple[int, bytes]:
    """An IPv6 packet. ``ext``: extension headers in order, each (type, body) with a body of
    6 + 8k bytes; ``payload_length`` and ``version`` override those fields."""
    proto, body = l4
    types = [t for t, _ in ext] + [proto]
    chain = b""
    for i, (_, hbody) in enumerate(ext):
        chain += struct.pack("!BB", types[i + 1], (len(hbody) + 2) // 8 - 1) + hbody
    body = chain + body
    hdr = struct.pack(
        "!IHBB16s16s",
        version << 28,
        len(body) if payload_length is None else payload_length,
        types[0],
        64,
        ipaddress.IPv6Address(src).packed,
        ipaddress.IPv6Address(dst).packed,
    )
    return ETH_P_IPV6, hdr + body


def frame(
    l3: tuple[int, bytes],
    vlans: tuple[int, ...] = (),
    dst: bytes = b"\x02" * 6,
    src: bytes = b"\x04" * 6,
) -> bytes:
    """An Ethernet frame; ``vlans`` adds 802.1AD/802.1Q tags (outermost first)."""
    ethertype, body = l3
    out = dst + src
    types = [ETH_P_8021AD if i == 0 and len(vlans) > 1 else ETH_P_8021Q for i in range(len(vlans))]
    if vlans:  # TPID, then per tag its TCI and the next type
        out += struct.pack("!H", types[0])
        for i, vid in enumerate(vlans):
            nxt = types[i + 1] if i + 1 < len(vlans) else ethertype
            out += struct.pack("!HH", vid, nxt)
        return out + body
    return out + struct.pack("!H", ethertype) + body
