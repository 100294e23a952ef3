"""XDP steering verdicts on crafted packets (BPF_PROG_TEST_RUN in the real kernel)."""

from __future__ import annotations

import os
import time

import pytest

from tuner import bpfsys
from tuner.actuate.xdp import XdpSteering
from tuner.packets import frame, ipv4, ipv6, tcp, udp

pytestmark = pytest.mark.kernel
XDP_PASS, XDP_REDIRECT = 2, 4
V4 = frame(ipv4("198.19.9.1", "198.19.9.2", tcp(40000, 80)))


@pytest.fixture
def steer():
    # the flow cache is per CPU, as a flow's packets come on one CPU (RSS): every test run of
    # the program must come from one CPU too (a migration between two runs under load sent
    # a cached flow's next packet to a CPU whose cache had not seen it, and failed a test)
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    try:
        with XdpSteering(name=f"t-xdp-{os.getpid()}", devices=["lo", "lo"], mode="active") as s:
            yield s
    finally:
        os.sched_setaffinity(0, before)


def verdict(s: XdpSteering, pkt: bytes) -> int:
    return bpfsys.prog_test_run(s.prog.fd, pkt).retval


def test_no_table_means_pass(steer):
    assert verdict(steer, V4) == XDP_PASS
    assert steer.counters()["passed_default"] == 1


@pytest.mark.parametrize(
    "pkt",
    [
        V4,
        frame(ipv6("2001:2::1", "2001:2::2", udp(5000, 53, b"q"))),
        frame(ipv6("2001:2::1", "2001:2::2", tcp(5000, 443))),
        frame(ipv4("198.19.9.1", "198.19.9.2", udp(1, 2))),
        frame(
            ipv4("198.19.9.1", "198.19.9.2", tcp(1, 2), options=b"\x01\x01\x01\x00")
        ),  # IP options
        frame(ipv4("198.19.9.1", "198.19.9.2", tcp(1, 2)), vlans=(7,)),
        frame(ipv4("198.19.9.1", "198.19.9.2", tcp(1, 2)), vlans=(7, 8)),  # QinQ
    ],
    ids=["v4-tcp", "v6-udp", "v6-tcp", "v4-udp", "v4-options", "vlan", "qinq"],
)
def test_parsed_flows_are_redirected_to_the_table_target(steer, pkt):
    steer.apply([1] * 256)
    assert verdict(steer, pkt) == XDP_REDIRECT
    assert steer.counters()["redirected"] == [0, 1]


@pytest.mark.parametrize(
    "pkt",
    [
        b"",
        b"\x00" * 13,  # shorter than Ethernet
        V4[: 14 + 10],  # truncated IPv4 header
        V4[: 14 + 20 + 10],  # truncated TCP header
        frame(ipv6("2001:2::1", "2001:2::2", udp(1, 2)))[: 14 + 30],
        frame(ipv4("198.19.9.1", "198.19.9.2", (1, b"\x08\x00" + b"\x00" * 6))),  # ICMP
        frame(ipv4("198.19.9.1", "198.19.9.2", udp(1, 2), frag_off=0x2000)),  # fragment
        frame(ipv4("198.19.9.1", "198.19.9.2", tcp(1, 2), options=b"\x01" * 40))[: 14 + 40],
        frame(ipv4("198.19.9.1", "198.19.9.2", tcp(1, 2)), vlans=(7,))[:16],  # cut in the tag
        bytes(range(256)) * 2,  # garbage
        b"\xff" * 12 + b"\x08\x00" + b"\x45" + b"\xff" * 60,  # garbage IPv4
    ],
    ids=[
        "empty",
        "short-eth",
        "short-ip",
        "short-tcp",
        "short-v6",
        "icmp",
        "fragment",
        "options-cut",
        "vlan-cut",
        "garbage",
        "garbage-ip",
    ],
)
def test_what_cannot_be_parsed_passes(steer, pkt):
    steer.apply([1] * 256)
    if len(pkt) < 14:  # the kernel refuses to test-run a frame shorter than Ethernet
        with pytest.raises(OSError):
            verdict(steer, pkt)
        return
    assert verdict(steer, pkt) == XDP_PASS
    assert steer.counters()["redirected"] == [0, 0]


@pytest.mark.parametrize("flow_cache", [True, False], ids=["cache", "flow-table-only"])
def test_existing_flow_keeps_its_target_across_a_table_change(flow_cache):
    with XdpSteering(
        name=f"t-xdp-f-{os.getpid()}", devices=["lo", "lo"], mode="active", flow_cache=flow_cache
    ) as steer:
        _keeps_its_target(steer)


def _keeps_its_target(steer):
    steer.apply([0] * 256)
    assert verdict(steer, V4) == XDP_REDIRECT
    steer.apply([1] * 256)
    assert verdict(steer, V4) == XDP_REDIRECT
    new_flow = frame(ipv4("198.19.9.1", "198.19.9.2", tcp(40001, 80)))
    assert verdict(steer, new_flow) == XDP_REDIRECT
    assert steer.counters()["redirected"] == [2, 1]
    assert steer.flows() == 2


def _age_the_flow_cache(steer, touched=None):
    """Make every cached flow look untouched for long (or drop the cache with touched=None)."""
    cache = steer._bpf[b"flow_cache"]
    if touched is None:
        cache.clear()
        return
    for key in range(len(cache)):
        leaves = cache[cache.Key(key)]
        if any(leaf.valid for leaf in leaves):
            for leaf in leaves:
                leaf.touched = touched
            cache[cache.Key(key)] = leaves


def test_flow_served_from_the_cache_is_put_back_into_an_evicted_flow_table(steer):
    ack = frame(ipv4("198.19.9.1", "198.19.9.2", tcp(40000, 80, flags=0x10)))  # V4's flow, later
    steer.apply([0] * 256)
    assert verdict(steer, V4) == XDP_REDIRECT and steer.flows() == 1
    steer._bpf[b"flows"].clear()  # as if the LRU had evicted it while the cache served it
    steer.apply([1] * 256)
    assert verdict(steer, ack) == XDP_REDIRECT  # from the cache: still target 0
    _age_the_flow_cache(steer, touched=0)
    assert verdict(steer, ack) == XDP_REDIRECT  # due for a touch: the flow table gets it back
    assert steer.flows() == 1
    _age_the_flow_cache(steer)  # its cache slot taken by another flow
    assert verdict(steer, ack) == XDP_REDIRECT  # from the flow table: still target 0
    assert steer.counters()["redirected"] == [4, 0]


def test_lease_lapses_by_itself():
    with XdpSteering(
        name=f"t-xdp-l-{os.getpid()}", devices=["lo"], mode="active", lease_ms=100
    ) as s:
        s.apply([0] * 256)
        assert verdict(s, V4) == XDP_REDIRECT
        time.sleep(0.25)  # 100 ms lease and up to two ticks of margin
        assert verdict(s, V4) == XDP_PASS
        assert s.counters()["passed_default"] == 1


def test_connection_open_before_the_table_stays_with_the_kernel(steer):
    steer.apply([1] * 256)
    mid_connection = frame(ipv4("198.19.9.1", "198.19.9.2", tcp(40002, 80, flags=0x10)))
    assert verdict(steer, mid_connection) == XDP_PASS
    assert verdict(steer, mid_connection) == XDP_PASS  # remembered, not re-decided
    assert steer.counters()["passed_kernel_flow"] == 2
    assert steer.counters()["redirected"] == [0, 0]


def test_expired_lease_passes_everything(steer):
    steer.apply([1] * 256)
    steer.expire()
    assert verdict(steer, V4) == XDP_PASS
    assert steer.counters()["passed_default"] == 1


def test_shadow_mode_leaves_the_maps_untouched():
    with XdpSteering(name=f"t-xdp-s-{os.getpid()}", devices=["lo"], mode="shadow") as s:
        s.apply([0] * 256)
        assert s.live_table() == (0, [0] * 256) and s.decisions[-1].written is False
        assert verdict(s, V4) == XDP_PASS


def test_cpumap_targets_are_keyed_by_cpu_number():
    cpu = (os.cpu_count() or 1) - 1
    with XdpSteering(name=f"t-xdp-c-{os.getpid()}", cpus=[cpu], mode="active") as s:
        s.apply([0] * 256)
        assert s.live_table() == (1, [cpu] * 256)
        assert verdict(s, V4) == XDP_REDIRECT
        assert s.counters()["redirected"] == [1]
