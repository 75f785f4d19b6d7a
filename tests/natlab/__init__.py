"""The NAT lab: network namespaces with home routers of each RFC 4787 type (see ``lab``)."""

from natlab.lab import (
    HOME_IP,
    PUBLIC_ADDRS,
    PUBLIC_HOST,
    WAN_ADDRS,
    Home,
    Lab,
    NatType,
    build_lab,
    nat_ruleset,
    unavailable,
)

__all__ = [
    "HOME_IP",
    "PUBLIC_ADDRS",
    "PUBLIC_HOST",
    "WAN_ADDRS",
    "Home",
    "Lab",
    "NatType",
    "build_lab",
    "nat_ruleset",
    "unavailable",
]
