"""The port-mapping core driven by hand: discovery, mapping, renewal, conflicts, removal."""

from __future__ import annotations

import random

import pytest
from harness import events
from hypothesis import given, settings
from hypothesis import strategies as st

from btchat.net.portmap import (
    CONFLICT,
    DEFAULT_LEASE,
    MAX_ATTEMPTS,
    ONLY_PERMANENT,
    PERMANENT_RECHECK,
    REDISCOVER,
    RETRY_FIRST,
    SAME_PORTS,
    AddMapping,
    Changed,
    DeleteMapping,
    Discover,
    Phase,
    PortMapper,
)
from btchat.net.upnp import description_url_ok

GW = "http://192.168.1.1:5000/rootDesc.xml"
WAN = "203.0.113.101"


def requests(core: PortMapper) -> list[object]:
    """The requests queued for the shell (state changes left out)."""
    return [e for e in events(core) if not isinstance(e, Changed)]


def at_gateway(ports: dict[str, int], seed: int = 1, lease: int = DEFAULT_LEASE) -> PortMapper:
    """A core that has just found the gateway at t=0 (its first AddMapping queued)."""
    core = PortMapper(ports, lease=lease, rng=random.Random(seed))
    core.start(0.0)
    assert requests(core) == [Discover(core.discovery_timeout)]
    core.gateway_found(GW, WAN, 0.0)
    return core


def mapped(ports: dict[str, int] | None = None, lease: int = DEFAULT_LEASE) -> PortMapper:
    """A core that found the gateway and got every port it asked for, at t=0."""
    core = at_gateway(ports or {"UDP": 6881, "TCP": 6881}, lease=lease)
    while asks := requests(core):
        (ask,) = asks
        assert isinstance(ask, AddMapping)
        core.added(ask.protocol, ask.external_port, ask.lease, 0.0)
    return core


def test_maps_udp_and_tcp_on_the_same_external_port() -> None:
    core = PortMapper({"UDP": 6881, "TCP": 6881}, rng=random.Random(1))
    core.start(0.0)
    assert core.phase is Phase.DISCOVERING and core.get_timer() is None  # waiting on shell
    assert requests(core) == [Discover(3.0)]
    core.gateway_found(GW, WAN, 0.0)
    assert requests(core) == [AddMapping("UDP", 6881, 6881, DEFAULT_LEASE)]
    core.added("UDP", 6881, DEFAULT_LEASE, 0.0)
    assert requests(core) == [AddMapping("TCP", 6881, 6881, DEFAULT_LEASE)]
    core.added("TCP", 6881, DEFAULT_LEASE, 0.0)
    state = core.state()
    assert state.phase is Phase.MAPPED
    assert state.external("UDP") == state.external("TCP") == (WAN, 6881)
    assert state.to_dict(10.0)["mappings"]["udp"]["expires_in"] == DEFAULT_LEASE - 10


def test_renews_at_half_the_lease_on_the_same_port() -> None:
    core = mapped({"UDP": 6881, "TCP": 40000})
    assert core.get_timer() == DEFAULT_LEASE / 2
    core.handle_timer(DEFAULT_LEASE / 2 - 1)
    assert requests(core) == []  # not yet
    core.handle_timer(DEFAULT_LEASE / 2)
    assert requests(core) == [AddMapping("UDP", 6881, 6881, DEFAULT_LEASE)]
    core.added("UDP", 6881, DEFAULT_LEASE, DEFAULT_LEASE / 2)
    assert requests(core) == []  # TCP renews on its own timer, not before
    core.handle_timer(DEFAULT_LEASE / 2)
    assert requests(core) == [AddMapping("TCP", 40000, 40000, DEFAULT_LEASE)]
    core.added("TCP", 40000, DEFAULT_LEASE, DEFAULT_LEASE / 2)
    # Renewed: the next renewal is half a lease later, and the mapping never lapsed.
    assert core.get_timer() == DEFAULT_LEASE
    assert core.state().mappings["UDP"].expires == DEFAULT_LEASE * 1.5
    assert core.phase is Phase.MAPPED


def test_a_gateway_that_restarted_gets_every_mapping_again_after_the_delay() -> None:
    core = mapped()
    core.gateway_restarted(100.0, delay=2.5)
    assert core.get_timer() == 102.5
    core.handle_timer(102.5)
    (ask,) = requests(core)
    assert ask == AddMapping("UDP", 6881, 6881, DEFAULT_LEASE)  # the port it had
    core.added("UDP", 6881, DEFAULT_LEASE, 102.6, external_ip="198.51.100.9")
    assert core.get_timer() == 102.5  # TCP is due too
    core.handle_timer(102.6)
    (ask,) = requests(core)
    assert ask.protocol == "TCP"
    core.added("TCP", 6881, DEFAULT_LEASE, 102.7)
    assert core.state().external_ip == "198.51.100.9"  # PCP names it in the answer
    assert core.get_timer() == 102.6 + DEFAULT_LEASE / 2


def test_a_gateway_that_stops_answering_is_searched_again_with_back_off() -> None:
    core = mapped()
    core.handle_timer(DEFAULT_LEASE / 2)
    assert isinstance(requests(core)[0], AddMapping)
    core.gateway_missing("timeout", DEFAULT_LEASE / 2)
    assert core.phase is Phase.NO_GATEWAY and core.state().external("UDP") is None
    t = DEFAULT_LEASE / 2
    assert core.get_timer() == t + RETRY_FIRST
    core.handle_timer(t + RETRY_FIRST)
    assert requests(core) == [Discover(3.0)]
    core.gateway_missing("no UPnP gateway answered", t + RETRY_FIRST)
    assert core.get_timer() == t + RETRY_FIRST + 2 * RETRY_FIRST  # doubled


def test_no_gateway_is_a_state_not_a_failure_and_is_looked_for_again_later() -> None:
    core = PortMapper({"UDP": 6881})
    core.start(0.0)
    assert requests(core) == [Discover(3.0)]
    core.gateway_missing("no UPnP gateway answered", 3.0)
    assert core.phase is Phase.NO_GATEWAY and core.state().mappings == {}
    assert core.get_timer() == 3.0 + REDISCOVER
    core.close(4.0)
    assert requests(core) == [] and core.get_timer() is None  # nothing to remove


def test_a_conflict_tries_the_other_protocols_port_then_random_ones_then_gives_up() -> None:
    core = at_gateway({"UDP": 6881, "TCP": 7000}, seed=3)
    assert requests(core) == [AddMapping("UDP", 6881, 6881, DEFAULT_LEASE)]
    core.refused("UDP", 6881, CONFLICT, "ConflictInMappingEntry", 0.0)
    (retry,) = requests(core)
    assert isinstance(retry, AddMapping) and retry.external_port != 6881
    core.added("UDP", retry.external_port, DEFAULT_LEASE, 0.0)
    # TCP wants its own port first, then the one UDP got (one port for both if possible).
    assert requests(core) == [AddMapping("TCP", 7000, 7000, DEFAULT_LEASE)]
    core.refused("TCP", 7000, CONFLICT, "ConflictInMappingEntry", 0.0)
    last = retry.external_port
    assert requests(core) == [AddMapping("TCP", last, 7000, DEFAULT_LEASE)]
    tried = {7000, last}
    for _ in range(MAX_ATTEMPTS - 2):
        core.refused("TCP", last, CONFLICT, "taken", 0.0)
        (ask,) = requests(core)
        assert isinstance(ask, AddMapping) and ask.external_port not in tried
        last = ask.external_port
        tried.add(last)
    core.refused("TCP", last, CONFLICT, "taken", 0.0)
    assert requests(core) == []  # MAX_ATTEMPTS reached
    state = core.state()
    assert state.phase is Phase.MAPPED and set(state.mappings) == {"UDP"}
    assert state.error is not None and "TCP" in state.error


def test_only_permanent_leases_are_asked_again_with_lease_zero_and_rechecked() -> None:
    core = at_gateway({"UDP": 6881}, seed=1)
    assert requests(core) == [AddMapping("UDP", 6881, 6881, DEFAULT_LEASE)]
    core.refused("UDP", 6881, ONLY_PERMANENT, "OnlyPermanentLeasesSupported", 0.0)
    assert requests(core) == [AddMapping("UDP", 6881, 6881, 0)]
    core.added("UDP", 6881, 0, 0.0)
    assert core.state().mappings["UDP"].expires is None
    assert core.get_timer() == PERMANENT_RECHECK  # a rebooted gateway forgets it
    core.handle_timer(PERMANENT_RECHECK)
    assert requests(core) == [AddMapping("UDP", 6881, 6881, 0)]


def test_same_port_required_falls_back_to_the_internal_port_only() -> None:
    core = at_gateway({"UDP": 6881}, seed=5)
    requests(core)
    core.refused("UDP", 6881, CONFLICT, "taken", 0.0)
    (ask,) = requests(core)
    core.refused("UDP", ask.external_port, SAME_PORTS, "SamePortValuesRequired", 0.0)  # type: ignore[union-attr]
    assert requests(core) == []  # 6881 is taken and nothing else is allowed
    assert core.phase is Phase.FAILED and core.get_timer() == REDISCOVER


def test_a_refusal_other_than_a_conflict_gives_the_protocol_up() -> None:
    core = at_gateway({"UDP": 6881, "TCP": 6881}, seed=1)
    requests(core)
    core.refused("UDP", 6881, 606, "Action not authorized", 0.0)
    assert requests(core) == [AddMapping("TCP", 6881, 6881, DEFAULT_LEASE)]
    core.refused("TCP", 6881, 606, "Action not authorized", 0.0)
    assert core.phase is Phase.FAILED and "not authorized" in (core.error or "")


def test_close_removes_every_mapping_one_at_a_time_and_stops() -> None:
    core = mapped({"UDP": 6881, "TCP": 7000})
    core.close(10.0)
    assert core.phase is Phase.CLOSED
    assert requests(core) == [DeleteMapping("UDP", 6881, 6881)]
    core.removed("UDP")
    assert requests(core) == [DeleteMapping("TCP", 7000, 7000)]
    core.removed("TCP")
    assert requests(core) == [] and core.get_timer() is None
    core.handle_timer(DEFAULT_LEASE)  # no renewal after close
    assert requests(core) == []


def test_close_while_a_mapping_is_in_flight_removes_it_too() -> None:
    core = at_gateway({"UDP": 6881}, seed=1)
    assert requests(core) == [AddMapping("UDP", 6881, 6881, DEFAULT_LEASE)]
    core.close(1.0)  # the shell was cancelled mid-request: the gateway may have said yes
    assert requests(core) == [DeleteMapping("UDP", 6881, 6881)]
    core.added("UDP", 6881, DEFAULT_LEASE, 1.1)  # a late answer changes nothing
    assert core.state().mappings == {}


def test_misuse_is_refused_at_once() -> None:
    with pytest.raises(ValueError):
        PortMapper({"SCTP": 1})
    with pytest.raises(ValueError):
        PortMapper({"UDP": 0})


@pytest.mark.parametrize(
    ("location", "sender", "ok"),
    [
        ("http://192.168.1.1:5000/rootDesc.xml", "192.168.1.1", True),
        ("http://192.168.1.7:5000/rootDesc.xml", "192.168.1.1", False),  # another host
        ("http://127.0.0.1:8080/v1/status", "127.0.0.1", False),  # our own API
        ("https://192.168.1.1/rootDesc.xml", "192.168.1.1", False),
        ("file:///etc/passwd", "192.168.1.1", False),
        ("http://router.lan/rootDesc.xml", "192.168.1.1", False),  # no name lookups
        ("", "192.168.1.1", False),
    ],
)
def test_a_gateway_description_is_fetched_only_from_the_device_that_answered(
    location: str, sender: str, ok: bool
) -> None:
    assert description_url_ok(location, sender) is ok


OUTCOMES = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "found",
                "missing",
                "added",
                "conflict",
                "permanent",
                "same",
                "other",
                "removed",
                "timer",
                "close",
            ]
        ),
        st.floats(min_value=0, max_value=4000, allow_nan=False),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(OUTCOMES)
def test_any_sequence_of_gateway_answers_keeps_the_core_sane(steps: list) -> None:
    """Whatever the gateway answers, in whatever order: one request at a time, no timer
    while one is out, every mapping deleted on close, nothing raised."""
    core = PortMapper({"UDP": 6881, "TCP": 7000}, rng=random.Random(0))
    now = 0.0
    core.start(now)
    (pending,) = requests(core)
    codes = {"conflict": CONFLICT, "permanent": ONLY_PERMANENT, "same": SAME_PORTS}
    for what, dt in steps:
        now += dt
        answered = True
        if what == "close":
            held = set(core.state().mappings)
            core.close(now)
            while deletes := requests(core):
                (delete,) = deletes
                assert isinstance(delete, DeleteMapping)
                assert delete.protocol in held or isinstance(pending, AddMapping)
                core.removed(delete.protocol)
            assert core.get_timer() is None and core.state().mappings == {}
            return
        if what == "timer":
            answered = False
            due = core.get_timer()
            core.handle_timer(now if due is None else max(now, due))
        elif isinstance(pending, Discover) and what == "found":
            core.gateway_found(GW, WAN, now)
        elif isinstance(pending, (Discover, AddMapping)) and what == "missing":
            core.gateway_missing("no answer", now)
        elif isinstance(pending, AddMapping) and what == "added":
            core.added(pending.protocol, pending.external_port, pending.lease, now)
        elif isinstance(pending, AddMapping) and what in ("conflict", "permanent", "same", "other"):
            core.refused(pending.protocol, pending.external_port, codes.get(what, 501), what, now)
        else:
            continue
        new = requests(core)
        if answered or pending is None:
            assert len(new) <= 1  # one request to the shell at a time
            pending = new[0] if new else None
        else:
            assert new == []  # a timer decides nothing while a request is out
        if pending is not None:
            assert core.get_timer() is None
        else:
            assert core.get_timer() is not None  # an idle core always wakes up again
        for g in core.state().mappings.values():
            assert 0 < g.external_port < 65536
