"""The virtual-time network simulator, exercised with small toy endpoints."""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import random
import time

import pytest

from btchat.sim import (
    Addr,
    Endpoint,
    SimNetwork,
    TraceEvent,
    loopback_addresses,
    private_addresses,
    public_addresses,
)

# -- toy endpoints ---------------------------------------------------------------------


class Toy:
    """Records what arrives; sends whatever is queued; no timer."""

    def __init__(self) -> None:
        self.outbox: list[tuple[bytes, Addr]] = []
        self.received: list[tuple[float, bytes, Addr]] = []
        self.timer: float | None = None
        self.fired: list[float] = []

    def send(self, data: bytes, dst: Addr) -> None:
        self.outbox.append((data, dst))

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        self.received.append((now, data, addr))

    def datagrams_to_send(self) -> list[tuple[bytes, Addr]]:
        out, self.outbox = self.outbox, []
        return out

    def get_timer(self) -> float | None:
        return self.timer

    def handle_timer(self, now: float) -> None:
        self.fired.append(now)
        self.timer = None


class Echo(Toy):
    """Sends every datagram straight back."""

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        super().receive_datagram(data, addr, now)
        self.send(data, addr)


class Pinger(Toy):
    """Pings a target and retries on a timer until answered, like a KRPC query."""

    def __init__(self, target: Addr, interval: float = 3.0, max_tries: int = 5) -> None:
        super().__init__()
        self.target = target
        self.interval = interval
        self.max_tries = max_tries
        self.tries = 0
        self.sent_at = 0.0
        self.rtt: float | None = None
        self.gave_up = False

    def start(self, now: float) -> None:
        self._ping(now)

    def _ping(self, now: float) -> None:
        self.tries += 1
        self.sent_at = now
        self.send(b"ping %d" % self.tries, self.target)
        self.timer = now + self.interval

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        super().receive_datagram(data, addr, now)
        if self.rtt is None and addr == self.target:
            self.rtt = now - self.sent_at
            self.timer = None

    def handle_timer(self, now: float) -> None:
        self.fired.append(now)
        if self.tries < self.max_tries:
            self._ping(now)
        else:
            self.gave_up = True
            self.timer = None


class Ticker(Toy):
    """A periodic timer, like a routing-table refresh."""

    def __init__(self, period: float, start: float = 0.0) -> None:
        super().__init__()
        self.period = period
        self.timer = start + period

    def handle_timer(self, now: float) -> None:
        self.fired.append(now)
        self.timer = now + self.period


def test_toys_satisfy_the_protocol() -> None:
    assert isinstance(Toy(), Endpoint)
    assert isinstance(Pinger(("10.0.0.1", 6881)), Endpoint)


# -- delivery and virtual time ---------------------------------------------------------


def test_delivery_takes_virtual_latency() -> None:
    net: SimNetwork[Toy] = SimNetwork(1, latency=(0.01, 0.02))
    echo_addr = net.attach(Echo())
    pinger = Pinger(echo_addr)
    p_addr = net.attach(pinger)
    net.call_on(5.0, p_addr, lambda _: pinger.start(net.now))
    assert net.run_until_idle(max_time=100.0)
    assert pinger.rtt is not None
    assert 0.02 <= pinger.rtt <= 0.04
    assert 5.02 <= net.now <= 5.04  # idle: now stays at the last event
    assert pinger.received[0][2] == echo_addr  # source address is the sender's
    assert net.endpoint(echo_addr).received[0][2] == p_addr


def test_retransmission_timeouts_cost_no_wall_time() -> None:
    net: SimNetwork[Toy] = SimNetwork(2)
    pinger = Pinger(("10.9.9.9", 6881), interval=3.0, max_tries=5)  # nobody there
    addr = net.attach(pinger)
    pinger.start(net.now)
    net.poke(addr)
    assert net.run_until_idle(max_time=3600.0)
    assert pinger.gave_up
    assert pinger.fired == [3.0, 6.0, 9.0, 12.0, 15.0]
    assert net.now == 15.0
    assert net.stats.sent == 5
    assert net.stats.dropped_offline == 5


def test_run_until_sets_now_and_stops_at_the_deadline() -> None:
    net: SimNetwork[Toy] = SimNetwork(3)
    ticker = Ticker(period=1.0)
    net.attach(ticker)
    net.run_until(10.5)
    assert net.now == 10.5
    assert ticker.fired == [float(i) for i in range(1, 11)]
    assert not net.run_until_idle(max_time=20.0)  # periodic: never idle
    assert net.now == 20.0
    net.run_for(5.0)
    assert net.now == 25.0
    assert len(ticker.fired) == 25


def test_run_until_condition() -> None:
    net: SimNetwork[Toy] = SimNetwork(4, latency=(0.1, 0.1))
    echo_addr = net.attach(Echo())
    pinger = Pinger(echo_addr)
    p_addr = net.attach(pinger)
    net.call_on(1.0, p_addr, lambda _: pinger.start(net.now))
    assert net.run_until_condition(lambda: pinger.rtt is not None, timeout=10.0)
    assert net.now == pytest.approx(1.2)
    # Already true: returns at once without advancing time.
    assert net.run_until_condition(lambda: True, timeout=10.0)
    assert net.now == pytest.approx(1.2)
    # Never true: runs to the deadline.
    assert not net.run_until_condition(lambda: False, timeout=10.0)
    assert net.now == pytest.approx(11.2)


def test_run_until_condition_with_polling() -> None:
    net: SimNetwork[Toy] = SimNetwork(5)
    ticker = Ticker(period=0.3)
    net.attach(ticker)
    assert net.run_until_condition(lambda: len(ticker.fired) >= 4, timeout=10.0, poll_interval=1.0)
    assert net.now == 2.0  # 1.2 satisfied it, but polls only happen on whole seconds
    assert not net.run_until_condition(lambda: False, timeout=2.5, poll_interval=1.0)
    assert net.now == 4.5


def test_same_time_events_run_in_schedule_order() -> None:
    net: SimNetwork[Toy] = SimNetwork(6)
    order: list[int] = []
    for i in range(5):
        net.call_at(1.0, functools.partial(order.append, i))
    net.run_until(1.0)
    assert order == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        net.call_at(0.5, lambda: None)


# -- faults --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["loss", "duplicate"])
def test_probabilities_are_checked_whenever_set(name: str) -> None:
    net: SimNetwork[Toy] = SimNetwork(7, **{name: 0.25})
    assert getattr(net, name) == 0.25
    setattr(net, name, 1)  # changed mid-run, stored as a float
    assert getattr(net, name) == 1.0 and isinstance(getattr(net, name), float)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=f"{name} must be in"):
            setattr(net, name, bad)
    assert getattr(net, name) == 1.0


def _blast(net: SimNetwork[Toy], n: int) -> tuple[Toy, Toy]:
    """Queue ``n`` numbered datagrams from one toy to another and run them through."""
    src, dst = Toy(), Toy()
    src_addr = net.attach(src)
    dst_addr = net.attach(dst)
    for i in range(n):
        src.send(i.to_bytes(4, "big"), dst_addr)
    net.poke(src_addr)
    assert net.run_until_idle(max_time=60.0)
    return src, dst


def test_loss_rate_matches_configuration() -> None:
    net: SimNetwork[Toy] = SimNetwork(7, loss=0.1)
    _, dst = _blast(net, 10_000)
    assert net.stats.sent == 10_000
    assert 0.08 <= net.stats.dropped_loss / 10_000 <= 0.12
    assert net.stats.delivered == len(dst.received) == 10_000 - net.stats.dropped_loss
    assert net.stats.bytes_sent == 40_000
    assert net.stats.bytes_delivered == 4 * net.stats.delivered


def test_duplication() -> None:
    net: SimNetwork[Toy] = SimNetwork(8, duplicate=0.2)
    _, dst = _blast(net, 10_000)
    assert 0.17 <= net.stats.duplicated / 10_000 <= 0.23
    assert len(dst.received) == 10_000 + net.stats.duplicated
    seqs = [d for _, d, _ in dst.received]
    assert len(set(seqs)) == 10_000  # every datagram arrived, some twice


def test_random_latency_reorders_and_fixed_latency_does_not() -> None:
    net: SimNetwork[Toy] = SimNetwork(9, latency=(0.01, 0.1))
    _, dst = _blast(net, 1000)
    seqs = [int.from_bytes(d, "big") for _, d, _ in dst.received]
    assert sorted(seqs) == list(range(1000))
    assert seqs != sorted(seqs)

    net = SimNetwork(9, latency=(0.05, 0.05))
    _, dst = _blast(net, 1000)
    assert [int.from_bytes(d, "big") for _, d, _ in dst.received] == list(range(1000))


def test_accounting_invariant_holds_mid_flight() -> None:
    net: SimNetwork[Toy] = SimNetwork(10, loss=0.2, duplicate=0.3, latency=(0.1, 1.0))
    src, dst = Toy(), Toy()
    src_addr = net.attach(src)
    dst_addr = net.attach(dst)
    for i in range(2000):
        src.send(i.to_bytes(4, "big"), dst_addr)
    net.poke(src_addr)
    net.call_at(0.5, lambda: net.detach(dst_addr))
    for t in (0.3, 0.5, 0.7, 2.0):
        net.run_until(t)
        s = net.stats
        assert s.sent + s.duplicated == s.delivered + s.dropped + net.in_flight
    assert net.in_flight == 0
    assert net.stats.dropped_offline > 0


def test_detach_drops_packets_and_stops_timers_reattach_resumes() -> None:
    net: SimNetwork[Toy] = SimNetwork(11, latency=(0.01, 0.01))
    ticker = Ticker(period=1.0)
    t_addr = net.attach(ticker)
    sender = Toy()
    s_addr = net.attach(sender)

    net.run_until(2.5)
    assert ticker.fired == [1.0, 2.0]
    assert net.detach(t_addr) is ticker
    assert not net.is_online(t_addr)
    assert net.addresses(online_only=True) == [s_addr]
    sender.send(b"hello?", t_addr)
    net.poke(s_addr)
    net.run_until(10.0)
    assert ticker.fired == [1.0, 2.0]  # timers stopped
    assert ticker.received == []  # packets dropped
    assert net.stats.dropped_offline == 1
    assert net.pending_events == 0

    net.reattach(t_addr)  # re-reads get_timer(): 3.0 is overdue, so it fires now
    net.run_until(12.5)
    assert ticker.fired == [1.0, 2.0, 10.0, 11.0, 12.0]
    sender.send(b"back", t_addr)
    net.poke(s_addr)
    net.run_until(13.0)
    assert [d for _, d, _ in ticker.received] == [b"back"]


def test_detach_loses_the_outbox_and_offline_sends() -> None:
    net: SimNetwork[Toy] = SimNetwork(12)
    a, b = Toy(), Toy()
    a_addr = net.attach(a)
    b_addr = net.attach(b)
    a.send(b"queued before the power cut", b_addr)
    net.detach(a_addr)
    a.send(b"sent while offline", b_addr)
    net.poke(a_addr)
    net.run_until(1.0)
    assert b.received == []
    assert net.stats.sent == net.stats.dropped_offline == 2


def test_reattach_with_a_restarted_endpoint() -> None:
    net: SimNetwork[Toy] = SimNetwork(13)
    addr = net.attach(Ticker(period=1.0))
    net.detach(addr)
    fresh = Ticker(period=5.0, start=net.now)
    net.reattach(addr, fresh)
    assert net.endpoint(addr) is fresh
    net.run_until(11.0)
    assert fresh.fired == [5.0, 10.0]
    with pytest.raises(ValueError):
        net.reattach(addr)


def test_in_flight_packets_to_a_node_going_offline_are_lost() -> None:
    net: SimNetwork[Toy] = SimNetwork(14, latency=(1.0, 1.0))
    src, dst = Toy(), Toy()
    src_addr = net.attach(src)
    dst_addr = net.attach(dst)
    src.send(b"x", dst_addr)
    net.poke(src_addr)
    net.call_at(0.5, lambda: net.detach(dst_addr))
    net.run_until(2.0)
    assert dst.received == []
    assert net.stats.dropped_offline == 1


def test_block_and_unblock() -> None:
    net: SimNetwork[Toy] = SimNetwork(15)
    a, b, c = Toy(), Toy(), Toy()
    a_addr, b_addr, c_addr = net.attach(a), net.attach(b), net.attach(c)

    def exchange() -> None:
        for x, xa in ((a, a_addr), (b, b_addr), (c, c_addr)):
            for ya in (a_addr, b_addr, c_addr):
                if ya != xa:
                    x.send(b"hi", ya)
            net.poke(xa)
        net.run_for(1.0)

    net.block(a_addr, b_addr)
    assert net.is_blocked(a_addr, b_addr) and net.is_blocked(b_addr, a_addr)
    exchange()
    assert [s for _, _, s in a.received] == [c_addr]
    assert [s for _, _, s in b.received] == [c_addr]
    assert sorted(s for _, _, s in c.received) == sorted([a_addr, b_addr])
    assert net.stats.dropped_blocked == 2

    net.unblock(a_addr, b_addr)
    exchange()
    assert len(a.received) == 3 and len(b.received) == 3

    net.block(a_addr, c_addr, both_ways=False)
    exchange()
    assert len(a.received) == 5  # c still reaches a
    assert len(c.received) == 5  # but a no longer reaches c


def test_drop_filter() -> None:
    net: SimNetwork[Toy] = SimNetwork(16)
    src, dst = Toy(), Toy()
    src_addr = net.attach(src)
    dst_addr = net.attach(dst)
    pred = net.add_drop_filter(lambda s, d, data: data.startswith(b"evil"))
    src.send(b"evil payload", dst_addr)
    src.send(b"good payload", dst_addr)
    net.poke(src_addr)
    net.run_for(1.0)
    assert [d for _, d, _ in dst.received] == [b"good payload"]
    net.remove_drop_filter(pred)
    src.send(b"evil payload", dst_addr)
    net.poke(src_addr)
    net.run_for(1.0)
    assert len(dst.received) == 2


def test_inject_spoofed_datagram() -> None:
    net: SimNetwork[Toy] = SimNetwork(17)
    dst = Toy()
    dst_addr = net.attach(dst)
    net.inject(b"forged", ("203.0.113.7", 1234), dst_addr)
    net.run_for(1.0)
    assert dst.received[0][1:] == (b"forged", ("203.0.113.7", 1234))


# -- timers ----------------------------------------------------------------------------------


def test_timer_rescheduling_follows_get_timer() -> None:
    net: SimNetwork[Toy] = SimNetwork(18)
    toy = Toy()
    addr = net.attach(toy)

    toy.timer = 10.0
    net.poke(addr)
    toy.timer = 4.0  # moved earlier: the 10.0 entry goes stale
    net.poke(addr)
    net.run_until(20.0)
    assert toy.fired == [4.0]

    toy.timer = 25.0
    net.poke(addr)
    toy.timer = 30.0  # moved later
    net.poke(addr)
    net.run_until(40.0)
    assert toy.fired == [4.0, 30.0]

    toy.timer = 45.0
    net.poke(addr)
    toy.timer = None  # cancelled
    net.poke(addr)
    assert net.run_until_idle(max_time=100.0)
    assert toy.fired == [4.0, 30.0]
    assert net.now == 40.0


def test_timer_change_seen_after_receive() -> None:
    """An endpoint that arms a timer while handling a datagram gets it fired."""

    class ArmOnReceive(Toy):
        def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
            super().receive_datagram(data, addr, now)
            self.timer = now + 2.0

    net: SimNetwork[Toy] = SimNetwork(19, latency=(0.5, 0.5))
    target = ArmOnReceive()
    t_addr = net.attach(target)
    net.inject(b"x", ("10.1.1.1", 1), t_addr)
    net.run_until(5.0)
    assert target.fired == [2.5]


def test_overdue_timer_fires_now_and_spinning_is_caught() -> None:
    net: SimNetwork[Toy] = SimNetwork(20)
    net.run_until(5.0)
    toy = Toy()
    toy.timer = 1.0  # already in the past
    net.attach(toy)
    net.run_until(5.0)
    assert toy.fired == [5.0]

    class Stuck(Toy):
        def handle_timer(self, now: float) -> None:
            self.fired.append(now)  # never moves its timer forward

    stuck = Stuck()
    stuck.timer = 6.0
    net.attach(stuck)
    with pytest.raises(RuntimeError, match="re-armed its timer"):
        net.run_until(7.0)


def test_many_stale_timers_are_compacted() -> None:
    net: SimNetwork[Toy] = SimNetwork(21)
    toy = Toy()
    addr = net.attach(toy)
    for i in range(120_000):
        toy.timer = 1000.0 - i * 0.001
        net.poke(addr)
    assert len(net._heap) < 100_000
    assert net.pending_events == 1
    net.run_until(1000.0)
    assert toy.fired == [pytest.approx(1000.0 - 119_999 * 0.001)]


def test_run_is_not_reentrant() -> None:
    net: SimNetwork[Toy] = SimNetwork(22)
    net.call_at(1.0, lambda: net.run_until(2.0))
    with pytest.raises(RuntimeError, match="re-entrant"):
        net.run_until(3.0)


def test_call_on_skips_offline_endpoints() -> None:
    net: SimNetwork[Toy] = SimNetwork(23)
    dst = Toy()
    dst_addr = net.attach(dst)
    src = Toy()
    src_addr = net.attach(src)
    net.call_on(1.0, src_addr, lambda e: e.send(b"one", dst_addr))
    net.call_at(2.0, lambda: net.detach(src_addr))
    net.call_on(3.0, src_addr, lambda e: e.send(b"two", dst_addr))
    net.run_until(5.0)
    assert [d for _, d, _ in dst.received] == [b"one"]
    assert net.stats.sent == 1


# -- addresses -------------------------------------------------------------------------------


def test_default_addresses_are_unique_private_hosts() -> None:
    net: SimNetwork[Toy] = SimNetwork(24)
    addrs = [net.attach(Toy()) for _ in range(600)]
    assert len({host for host, _ in addrs}) == 600
    assert all(port == 6881 for _, port in addrs)
    assert all(ipaddress.ip_address(h) in ipaddress.ip_network("10.0.0.0/8") for h, _ in addrs)
    assert all(not h.endswith((".0", ".255")) for h, _ in addrs)


def test_explicit_and_reserved_addresses() -> None:
    net: SimNetwork[Toy] = SimNetwork(25)
    first = next(private_addresses())
    net.attach(Toy(), first)
    assert net.next_address() != first  # automatic allocation skips taken addresses
    with pytest.raises(ValueError):
        net.attach(Toy(), first)
    reserved = net.next_address()
    assert net.attach(Toy(), reserved) == reserved


def test_loopback_and_public_address_supplies() -> None:
    net: SimNetwork[Toy] = SimNetwork(26, addresses=loopback_addresses(30000))
    assert [net.attach(Toy()) for _ in range(3)] == [
        ("127.0.0.1", 30000),
        ("127.0.0.1", 30001),
        ("127.0.0.1", 30002),
    ]
    pub = [a for a, _ in zip(public_addresses(seed=1), range(500), strict=False)]
    assert len(set(pub)) == 500
    assert all(ipaddress.ip_address(h).is_global for h, _ in pub)
    assert pub == [a for a, _ in zip(public_addresses(seed=1), range(500), strict=False)]


# -- determinism -----------------------------------------------------------------------------


def _start(net: SimNetwork[Toy], pinger: Toy) -> None:
    assert isinstance(pinger, Pinger)
    pinger.start(net.now)


def _scenario(seed: int) -> tuple[str, dict[str, int]]:
    """Pingers, echoes, loss, duplication and churn; returns a trace hash and the counters."""
    digest = hashlib.sha256()

    def trace(ev: TraceEvent) -> None:
        digest.update(repr(ev).encode())

    net: SimNetwork[Toy] = SimNetwork(seed, loss=0.1, duplicate=0.05, tracer=trace)
    echoes = [net.attach(Echo()) for _ in range(20)]
    rng = random.Random(seed)
    pingers = []
    for _ in range(50):
        p = Pinger(rng.choice(echoes), interval=1.0, max_tries=4)
        addr = net.attach(p)
        pingers.append(addr)
        net.call_on(rng.uniform(0, 5), addr, functools.partial(_start, net))
    for i, e in enumerate(echoes[:5]):
        net.call_at(2.0 + i, functools.partial(net.detach, e))
        net.call_at(4.0 + i, functools.partial(net.reattach, e))
    net.block(pingers[0], echoes[0])
    net.run_until_idle(max_time=60.0)
    return digest.hexdigest(), net.stats.as_dict()


def test_same_seed_same_event_sequence() -> None:
    h1, s1 = _scenario(42)
    h2, s2 = _scenario(42)
    assert h1 == h2
    assert s1 == s2
    assert s1["delivered"] > 0 and s1["dropped_loss"] > 0 and s1["duplicated"] > 0
    h3, _ = _scenario(43)
    assert h3 != h1


# -- scale -----------------------------------------------------------------------------------


class Chatter(Toy):
    """Sends ``count`` pings to random peers at random times and answers pings."""

    def __init__(self, index: int, count: int) -> None:
        super().__init__()
        self.rng = random.Random(index)
        self.peers: list[Addr] = []
        self.left = count
        self.pongs = 0
        self.timer = self.rng.uniform(0.0, 1.0)

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        if data[0] == 0x70:  # b"p"ing
            self.outbox.append((b"o" + data[1:], addr))
        else:
            self.pongs += 1

    def handle_timer(self, now: float) -> None:
        self.outbox.append((b"p%d" % self.left, self.rng.choice(self.peers)))
        self.left -= 1
        self.timer = now + self.rng.uniform(0.1, 2.0) if self.left else None


def test_five_thousand_endpoints_two_hundred_thousand_packets() -> None:
    n, pings = 5000, 20
    net: SimNetwork[Chatter] = SimNetwork(99)
    nodes = [Chatter(i, pings) for i in range(n)]
    addrs = [net.attach(node) for node in nodes]
    for node in nodes:
        node.peers = addrs
    start_wall = time.perf_counter()
    assert net.run_until_idle(max_time=3600.0)
    wall = time.perf_counter() - start_wall
    s = net.stats
    assert s.sent == s.delivered == 2 * n * pings == 200_000
    assert sum(node.pongs for node in nodes) == n * pings
    assert s.timers_fired == n * pings
    assert net.now > 20.0  # minutes of traffic in virtual time
    print(
        f"\nsim: {n} endpoints, {s.sent} packets, {s.events} events, "
        f"{net.now:.1f} virtual s in {wall:.2f} wall s: {s.events / wall:,.0f} events/s"
    )
