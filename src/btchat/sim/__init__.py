"""In-process, virtual-time network simulation for tests, benchmarks and the sandbox."""

from btchat.sim.network import (
    Addr,
    DropFilter,
    Endpoint,
    SimNetwork,
    SimStats,
    TraceEvent,
    loopback_addresses,
    private_addresses,
    public_addresses,
)

__all__ = [
    "Addr",
    "DropFilter",
    "Endpoint",
    "SimNetwork",
    "SimStats",
    "TraceEvent",
    "loopback_addresses",
    "private_addresses",
    "public_addresses",
]
