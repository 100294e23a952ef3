"""The XDP steering program on unusual and malformed packets (issue 18, items 17 to 19), run
through BPF_PROG_TEST_RUN in the real kernel: a table of cases as katran's BpfTester keeps
them (packet in, verdict and packet out), and packets fuzzed with hypothesis against a
reference parser written here in Python.

The program must never drop or abort; a packet it does not steer passes unchanged and is not
remembered in the flow table.
"""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tuner import bpfsys
from tuner.actuate.xdp import XdpSteering
from tuner.packets import (
    DSTOPTS,
    FRAGMENT,
    HOPOPTS,
    ROUTING,
    frame,
    ipv4,
    ipv6,
    tcp,
    udp,
)

pytestmark = pytest.mark.kernel
XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)
A4, B4 = "198.19.9.1", "198.19.9.2"
A6, B6 = "2001:2::1", "2001:2::2"


def patched(pkt: bytes, pos: int, value: int) -> bytes:
    """``pkt`` with byte ``pos`` set to ``value``."""
    return pkt[:pos] + bytes([value]) + pkt[pos + 1 :]


CASES = [  # (name, packet, verdict)
    ("v4-tcp", frame(ipv4(A4, B4, tcp(1, 80))), XDP_REDIRECT),
    ("v4-udp", frame(ipv4(A4, B4, udp(1, 53, b"q"))), XDP_REDIRECT),
    ("v4-padded", frame(ipv4(A4, B4, tcp(1, 80))) + bytes(6), XDP_REDIRECT),  # Ethernet pad
    ("v4-tot-len-past-frame", frame(ipv4(A4, B4, tcp(1, 80), total_length=200)), XDP_PASS),
    ("v4-tot-len-zero", frame(ipv4(A4, B4, tcp(1, 80), total_length=0)), XDP_PASS),
    ("v4-tot-len-below-header", frame(ipv4(A4, B4, tcp(1, 80), total_length=12)), XDP_PASS),
    ("v4-tot-len-no-ports", frame(ipv4(A4, B4, tcp(1, 80), total_length=20)), XDP_PASS),
    ("tcp-doff-below-5", frame(ipv4(A4, B4, tcp(1, 80, doff=4))), XDP_PASS),
    (
        "tcp-doff-past-data",
        patched(frame(ipv4(A4, B4, tcp(1, 80))), 14 + 20 + 12, 0x80),
        XDP_PASS,
    ),  # fmt: skip
    ("tcp-options-cut", frame(ipv4(A4, B4, tcp(1, 80, doff=15)))[:-8], XDP_PASS),
    ("tcp-options", frame(ipv4(A4, B4, tcp(1, 80, doff=8))), XDP_REDIRECT),
    ("udp-len-below-8", frame(ipv4(A4, B4, udp(1, 53, b"q", length=4))), XDP_PASS),
    ("udp-len-past-ip", frame(ipv4(A4, B4, udp(1, 53, b"q", length=64))), XDP_PASS),
    ("v6-tcp", frame(ipv6(A6, B6, tcp(1, 80))), XDP_REDIRECT),
    ("v6-payload-past-frame", frame(ipv6(A6, B6, tcp(1, 80), payload_length=90)), XDP_PASS),
    ("v6-version-4", frame(ipv6(A6, B6, tcp(1, 80), version=4)), XDP_PASS),
    ("v6-hop-by-hop", frame(ipv6(A6, B6, udp(1, 53), ext=[(HOPOPTS, bytes(6))])), XDP_REDIRECT),
    (
        "v6-three-ext",
        frame(
            ipv6(
                A6,
                B6,
                tcp(1, 80),
                ext=[(HOPOPTS, bytes(6)), (ROUTING, bytes(14)), (DSTOPTS, bytes(6))],
            )
        ),  # fmt: skip
        XDP_REDIRECT,
    ),
    ("v6-fragment", frame(ipv6(A6, B6, udp(1, 53), ext=[(FRAGMENT, bytes(6))])), XDP_PASS),
    (
        "v6-ext-past-frame",
        frame(ipv6(A6, B6, udp(1, 53), ext=[(DSTOPTS, bytes(6))]))[:60],
        XDP_PASS,
    ),  # fmt: skip
]


@pytest.fixture(scope="module")
def steer():
    with XdpSteering(
        name=f"t-xdpp-{os.getpid()}", devices=["lo", "lo"], mode="active", lease_ms=60000
    ) as s:
        s.apply([1] * 256)
        yield s


def forget_flows(s: XdpSteering) -> None:
    """Every packet a new flow again, with the table in force."""
    s._bpf[b"flows"].clear()
    s._bpf[b"flow_cache"].clear()
    s.renew()


def run(s: XdpSteering, pkt: bytes) -> tuple[int, bytes]:
    r = bpfsys.prog_test_run(s.prog.fd, pkt, out_size=len(pkt) + 256)
    return r.retval, r.data_out


@pytest.mark.parametrize("name,pkt,want", CASES, ids=[c[0] for c in CASES])
def test_packet_table(steer, name, pkt, want):
    forget_flows(steer)
    verdict, out = run(steer, pkt)
    assert verdict == want
    assert out == pkt  # a reuseport/CPU target never rewrites the frame
    assert steer.flows() == (1 if want == XDP_REDIRECT else 0)  # passed: not remembered


def test_backend_gone_passes_the_frame_untouched_and_unremembered():
    """Item 17: the chosen backend's devmap entry is gone (its interface went away)."""
    with XdpSteering(
        name=f"t-xdpb-{os.getpid()}",
        devices=["lo", "lo"],
        macs=["02:00:00:00:00:01", "02:00:00:00:00:02"],
        mode="active",
    ) as s:
        s.apply([1] * 256)
        syn = frame(ipv4(A4, B4, tcp(1, 80)))
        verdict, out = run(s, syn)
        assert verdict == XDP_REDIRECT and out[:6] == bytes.fromhex("020000000002")
        targets = s._bpf[b"targets"]
        del targets[targets.Key(1)]  # what the kernel does when the interface goes
        for pkt in (syn, frame(ipv4(A4, B4, tcp(2, 80)))):  # placed, and a new flow
            verdict, out = run(s, pkt)
            assert verdict == XDP_PASS and out == pkt  # not rewritten for a backend
        assert s.flows() == 0  # neither is remembered: decided afresh once a target is back
        assert s.counters()["passed_no_target"] == 2


# -- fuzzing ---------------------------------------------------------------------------------
def steerable(pkt: bytes) -> bool | None:
    """A reference parser: would the program steer this new packet (with a table in force)?
    True: a well-formed UDP datagram or TCP SYN; None: a well-formed TCP segment past the
    handshake (left to the kernel, and remembered as such); False: it does not parse."""
    if len(pkt) < 14:
        return False
    off, (etype,) = 14, struct.unpack_from("!H", pkt, 12)
    for _ in range(2):
        if etype in (0x8100, 0x88A8):
            if len(pkt) < off + 4:
                return False
            (etype,) = struct.unpack_from("!H", pkt, off + 2)
            off += 4
    if etype == 0x0800:
        if len(pkt) < off + 20 or pkt[off] >> 4 != 4 or pkt[off] & 15 < 5:
            return False
        hlen, (tot,), (frag,) = (pkt[off] & 15) * 4, *[struct.unpack_from("!H", pkt, off + k)
                                                       for k in (2, 6)]  # fmt: skip
        if frag & 0x3FFF or tot < hlen or off + tot > len(pkt):
            return False
        proto, l4, left = pkt[off + 9], off + hlen, tot - hlen
    elif etype == 0x86DD:
        if len(pkt) < off + 40 or pkt[off] >> 4 != 6:
            return False
        (left,) = struct.unpack_from("!H", pkt, off + 4)
        proto, l4 = pkt[off + 6], off + 40
        if l4 + left > len(pkt):
            return False
        for _ in range(4):
            if proto not in (HOPOPTS, ROUTING, DSTOPTS):
                break
            if len(pkt) < l4 + 2:
                return False
            elen = (pkt[l4 + 1] + 1) * 8
            if elen > left or l4 + elen > len(pkt):
                return False
            proto, l4, left = pkt[l4], l4 + elen, left - elen
    else:
        return False
    if proto == 6:
        if len(pkt) < l4 + 20 or left < 20:
            return False
        doff = (pkt[l4 + 12] >> 4) * 4
        syn, ack = pkt[l4 + 13] & 2, pkt[l4 + 13] & 16
        if not (20 <= doff <= left and l4 + doff <= len(pkt)):
            return False
        return True if syn and not ack else None
    if proto == 17:
        if len(pkt) < l4 + 8 or left < 8:
            return False
        (ulen,) = struct.unpack_from("!H", pkt, l4 + 4)
        return 8 <= ulen <= left
    return False


def _bases() -> st.SearchStrategy[bytes]:
    l4 = st.one_of(
        st.builds(
            lambda d, f, p: tcp(1000, 80, p, flags=f, doff=d),
            st.integers(0, 15),
            st.sampled_from([0x02, 0x12, 0x10]),
            st.binary(max_size=16),
        ),  # fmt: skip
        st.builds(
            lambda n, p: udp(1000, 53, p, length=n),
            st.one_of(st.none(), st.integers(0, 80)),
            st.binary(max_size=16),
        ),  # fmt: skip
    )
    ext = st.lists(st.tuples(st.sampled_from([HOPOPTS, ROUTING, DSTOPTS, FRAGMENT]),
                             st.sampled_from([bytes(6), bytes(14)])), max_size=5)  # fmt: skip
    v4 = st.builds(
        lambda x, n, fo: ipv4(A4, B4, x, total_length=n, frag_off=fo),
        l4,
        st.one_of(st.none(), st.integers(0, 120)),
        st.sampled_from([0, 0x2000, 8]),
    )
    v6 = st.builds(
        lambda x, e, n, v: ipv6(A6, B6, x, ext=e, payload_length=n, version=v),
        l4,
        ext,
        st.one_of(st.none(), st.integers(0, 120)),
        st.sampled_from([6, 6, 4]),
    )
    vlans = st.lists(st.integers(1, 4094), max_size=2).map(tuple)
    return st.builds(lambda l3, v: frame(l3, vlans=v), st.one_of(v4, v6), vlans)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(base=_bases(), cut=st.integers(0, 200), flips=st.lists(
    st.tuples(st.integers(0, 120), st.integers(0, 255)), max_size=3))  # fmt: skip
def test_fuzzed_packets_never_drop_and_steer_only_what_parses(steer, base, cut, flips):
    pkt = bytearray(base[: max(14, len(base) - cut)] if cut < 100 else base)
    for pos, value in flips:
        if 12 <= pos < len(pkt):  # leave the MACs; anything after them may lie
            pkt[pos] = value
    pkt = bytes(pkt)
    forget_flows(steer)
    verdict, out = run(steer, pkt)
    assert verdict in (XDP_PASS, XDP_REDIRECT)  # never dropped, never aborted
    assert out == pkt
    want = steerable(pkt)
    assert (verdict == XDP_REDIRECT) == (want is True), pkt.hex()
    assert steer.flows() == (0 if want is False else 1)  # what does not parse: not remembered
