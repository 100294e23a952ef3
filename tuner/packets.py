"""Build raw Ethernet frames (IPv4/IPv6, TCP/UDP, VLAN tags) for BPF_PROG_TEST_RUN.

>>> f = frame(ipv4("10.0.0.1", "10.0.0.2", tcp(1234, 80)))
>>> len(f), f[12:14].hex()
(54, '0800')
"""

from __future__ import annotations

import ipaddress
import struct

ETH_P_IP, ETH_P_IPV6, ETH_P_8021Q, ETH_P_8021AD = 0x0800, 0x86DD, 0x8100, 0x88A8
PROTO_TCP, PROTO_UDP, PROTO_ICMP = 6, 17, 1


def tcp(sport: int, dport: int, payload: bytes = b"", flags: int = 0x02) -> tuple[int, bytes]:
    """A TCP segment; ``flags`` 0x02 is a SYN (a new connection), 0x10 an ACK."""
    hdr = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 65535, 0, 0)
    return PROTO_TCP, hdr + payload


def udp(sport: int, dport: int, payload: bytes = b"") -> tuple[int, bytes]:
    return PROTO_UDP, struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def ipv4(
    src: str, dst: str, l4: tuple[int, bytes], options: bytes = b"", frag_off: int = 0
) -> tuple[int, bytes]:
    proto, body = l4
    ihl = 5 + len(options) // 4
    hdr = struct.pack(
        "!BBHHHBBH4s4s",
        4 << 4 | ihl,
        0,
        ihl * 4 + len(body),
        1,
        frag_off,
        64,
        proto,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    return ETH_P_IP, hdr + options + body


def ipv6(src: str, dst: str, l4: tuple[int, bytes]) -> tuple[int, bytes]:
    proto, body = l4
    hdr = struct.pack(
        "!IHBB16s16s",
        6 << 28,
        len(body),
        proto,
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
