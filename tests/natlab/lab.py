"""A NAT lab in Linux network namespaces: a "public internet", home routers of each NAT type.

How this works. One namespace holds a bridge that plays the internet (203.0.113.0/24,
TEST-NET-3, which exists only inside the namespaces built here). Public hosts are
namespaces with a veth on that bridge. Each home is two namespaces: a router (WAN veth
on the bridge, LAN veth to the home, IPv4 forwarding on, one nftables table that makes it
a NAT of the chosen RFC 4787 type, including the input drop of unsolicited WAN traffic
every real router has) and the home itself (192.168.1.10, default route via the router).
Every home uses the same LAN range, as real homes do.

Code runs "inside" a namespace two ways: a command or a Python process through
``ip netns exec`` (:meth:`Lab.run`, :meth:`Lab.popen`), or, for tests that want every
node in one asyncio loop, :meth:`Lab.inside`, which moves the calling thread into the
namespace while sockets are created: a socket stays in the namespace it was made in.
Teardown deletes every namespace the lab made (which removes their veths and rules),
whatever happened; namespaces left by a killed earlier run are removed on the next build.

Needs root, ``ip`` (iproute2) and ``nft`` (nftables); :func:`unavailable` says why not.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

__all__ = [
    "HOME_IP",
    "LAN_ADDRS",
    "LAN_GW",
    "NATPMP_WAN",
    "PCP_WAN",
    "PUBLIC_ADDRS",
    "PUBLIC_HOST",
    "SECOND_WAN_ADDRS",
    "UPNP_MARK",
    "UPNP_WAN",
    "WAN_ADDRS",
    "Home",
    "Lab",
    "NatType",
    "build_lab",
    "build_lan",
    "kill_all",
    "lab_or_skip",
    "miniupnpd_unavailable",
    "nat_ruleset",
    "unavailable",
]

PREFIX = "btnl"  # namespace names: btnl<pid>-<role>
NETNS_DIR = Path("/run/netns")
INTERNET = "203.0.113"  # RFC 5737 TEST-NET-3: only inside namespaces built here
LAN_GW = "192.168.1.1"
HOME_IP = "192.168.1.10"
_CLONE_NEWNET = 0x40000000


class NatType(StrEnum):
    """RFC 4787 behaviour of a home router: (mapping, filtering)."""

    FULL_CONE = "full-cone"  # endpoint-independent mapping and filtering
    ADDRESS_RESTRICTED = "address-restricted"  # EIM, address-dependent filtering
    PORT_RESTRICTED = "port-restricted"  # EIM, address-and-port-dependent filtering
    SYMMETRIC = "symmetric"  # endpoint-dependent mapping, address-and-port filtering


# A real router drops unsolicited WAN traffic to itself too. Without this, the early
# packet of a hole punch is confirmed by conntrack at the router's own INPUT hook and
# takes the tuple, so the later outbound mapping gets a new port (shared natlab notes).
_INPUT_DROP = """
  chain input { type filter hook input priority filter; policy accept;
    iif "wan" ct state established,related accept
    iif "wan" drop
  }"""

#: Set on a packet that miniupnpd's own forward chain accepted (a port mapping): a drop
#: in any base chain is final in nftables, so ours must let those through by name.
UPNP_MARK = 0x55

_ESTABLISHED_ONLY = f"""
  chain forward {{ type filter hook forward priority filter; policy accept;
    iif "wan" ct state established,related accept
    iif "wan" meta mark {UPNP_MARK} accept
    iif "wan" drop
  }}"""


def nat_ruleset(nat: NatType, wan_ip: str) -> str:
    """The nftables table that makes a router of type ``nat`` (WAN interface "wan")."""
    if nat in (NatType.FULL_CONE, NatType.ADDRESS_RESTRICTED):
        # EIM/EIF: a dynamic map from WAN port to the LAN endpoint that last went out
        # through it; inbound UDP to a mapped port is sent there, whoever sends it.
        contacted = nat is NatType.ADDRESS_RESTRICTED
        sets = """
  map fullcone { type inet_service : ipv4_addr . inet_service; flags dynamic,timeout;
    timeout 300s; }"""
        forward = ""
        if contacted:
            # ADF: only hosts we sent to may come in, from any of their ports.
            sets += """
  set contacted { type ipv4_addr . inet_service; flags dynamic,timeout; timeout 300s; }"""
            forward = f"""
  chain forward {{ type filter hook forward priority filter; policy accept;
    oif "wan" meta l4proto udp update @contacted {{ ip daddr . udp sport timeout 300s }}
    iif "wan" ct state established,related accept
    iif "wan" ip saddr . udp dport @contacted accept
    iif "wan" meta mark {UPNP_MARK} accept
    iif "wan" drop
  }}"""
        return f"""table ip t {{{sets}
  chain pre {{ type nat hook prerouting priority dstnat; policy accept;
    iif "wan" meta l4proto udp dnat ip to udp dport map @fullcone
  }}
  chain post {{ type nat hook postrouting priority srcnat; policy accept;
    oif "wan" meta l4proto udp update @fullcone {{ udp sport timeout 300s : ip saddr . udp sport }}
    oif "wan" snat ip to {wan_ip}
  }}{forward}{_INPUT_DROP}
}}
"""
    if nat is NatType.PORT_RESTRICTED:
        post = f'oif "wan" snat ip to {wan_ip}'  # port-preserving: one mapping per port
    else:
        post = 'oif "wan" masquerade random'  # a fresh random port per destination
    return f"""table ip t {{
  chain post {{ type nat hook postrouting priority srcnat; policy accept;
    {post}
  }}{_ESTABLISHED_ONLY}{_INPUT_DROP}
}}
"""


# miniupnpd's table: the chains it fills (its names set in the config below), hooked in
# just before the lab's own chains. A packet its forward chain accepts keeps UPNP_MARK.
_MINIUPNPD_TABLE = f"""table inet miniupnpd {{
  chain forward {{ type filter hook forward priority filter - 10; policy accept;
    meta mark set {UPNP_MARK} jump miniupnpd
    meta mark set 0
  }}
  chain miniupnpd {{
  }}
  chain prerouting {{ type nat hook prerouting priority dstnat - 10; policy accept;
    jump prerouting_miniupnpd
  }}
  chain postrouting {{ type nat hook postrouting priority srcnat - 10; policy accept;
    jump postrouting_miniupnpd
  }}
  chain prerouting_miniupnpd {{
  }}
  chain postrouting_miniupnpd {{
  }}
}}
"""
_MINIUPNPD_CONF = f"""ext_ifname=wan
listening_ip=lan
http_port=0
enable_upnp=yes
enable_natpmp=no
secure_mode=yes
upnp_table_name=miniupnpd
upnp_nat_table_name=miniupnpd
upnp_forward_chain=miniupnpd
upnp_nat_chain=prerouting_miniupnpd
upnp_nat_postrouting_chain=postrouting_miniupnpd
uuid=6d1c3a4e-0b7f-4e55-9a51-62746368a7a1
allow 1024-65535 {LAN_GW.rsplit(".", 1)[0]}.0/24 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
"""


#: A gateway without PCP: version-2 packets to port 5351 (the first UDP payload byte,
#: RFC 6887 section 7) are refused; NAT-PMP's version 0 still reaches miniupnpd.
_NO_PCP = """table ip nopcp {
  chain input { type filter hook input priority filter - 5; policy accept;
    udp dport 5351 @th,64,8 != 0 reject
  }
}
"""


def _tool(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for d in ("/usr/sbin", "/sbin") if os.access(p := f"{d}/{name}", os.X_OK)), None
    )


def unavailable() -> str | None:
    """Why the lab cannot be built here, or None when it can."""
    if os.geteuid() != 0:
        return "the NAT lab needs root (network namespaces, nftables)"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if _tool(tool) is None:
            return f"the NAT lab needs `{tool}`: apt-get install {package} (scripts/setup does)"
    return None


def miniupnpd_unavailable() -> str | None:
    """Why the lab cannot run a UPnP gateway here, or None when it can."""
    if _tool("miniupnpd") is None:
        return "the UPnP lab needs `miniupnpd`: apt-get install miniupnpd-nftables (scripts/setup)"
    return None


def _sh(argv: Sequence[str], *, stdin: str | None = None) -> str:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip() or done.stdout}")
    return done.stdout


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@dataclass
class Home:
    """One home behind a router: the router's WAN address and both namespaces."""

    nat: NatType
    router: str  # namespace
    ns: str  # the home's namespace
    wan_ip: str
    ip: str = HOME_IP


@dataclass
class Lab:
    """A built topology; see the module docstring. Use :func:`build_lab` to make one."""

    tag: str
    namespaces: list[str] = field(default_factory=list)
    public: dict[str, list[str]] = field(default_factory=dict)  # namespace -> its addresses
    homes: dict[NatType, Home] = field(default_factory=dict)
    #: A second home of some types (pairs of one type: two port-restricted homes...).
    seconds: dict[NatType, Home] = field(default_factory=dict)
    extra: dict[str, Home] = field(default_factory=dict)  # role -> a further home
    processes: list[subprocess.Popen[str]] = field(default_factory=list)

    def ns(self, role: str) -> str:
        """The namespace of ``role`` ("pub", "host", "inet", ...)."""
        return f"{self.tag}-{role}"

    @property
    def internet(self) -> str:
        return self.ns("inet")

    # ------------------------------------------------------------------ running

    def run(self, ns: str, *argv: str, stdin: str | None = None) -> str:
        """Run a command inside namespace ``ns``; raises with its stderr if it fails."""
        return _sh(["ip", "netns", "exec", ns, *argv], stdin=stdin)

    def popen(self, ns: str, argv: Sequence[str], **kw: object) -> subprocess.Popen[str]:
        """Start a process (e.g. ``[sys.executable, "-c", ...]``) inside ``ns``."""
        return subprocess.Popen(["ip", "netns", "exec", ns, *argv], text=True, **kw)  # type: ignore[call-overload, no-any-return]

    @contextlib.contextmanager
    def inside(self, ns: str) -> Iterator[None]:
        """Move this thread into ``ns``; sockets made meanwhile stay there for good."""
        with open("/proc/thread-self/ns/net") as home, open(NETNS_DIR / ns) as target:
            _setns(target.fileno())
            try:
                yield
            finally:
                _setns(home.fileno())

    # ----------------------------------------------------------------- building

    def _netns(self, role: str) -> str:
        name = self.ns(role)
        _sh(["ip", "netns", "add", name])
        self.namespaces.append(name)
        _sh(["ip", "-n", name, "link", "set", "lo", "up"])
        return name

    def _plug(self, ns: str, ifname: str, port: str) -> None:
        """A veth from ``ns`` (named ``ifname``) to the internet bridge (port ``port``)."""
        _sh(["ip", "link", "add", ifname, "netns", ns, "type", "veth",
             "peer", "name", port, "netns", self.internet])  # fmt: skip
        _sh(["ip", "-n", self.internet, "link", "set", port, "master", "br0", "up"])
        _sh(["ip", "-n", ns, "link", "set", ifname, "up"])

    def add_internet(self) -> None:
        ns = self._netns("inet")
        _sh(["ip", "-n", ns, "link", "add", "br0", "type", "bridge"])
        _sh(["ip", "-n", ns, "link", "set", "br0", "up"])

    def add_public(self, role: str, addrs: Sequence[str]) -> str:
        """A public host with one or more internet addresses; returns its namespace."""
        ns = self._netns(role)
        self._plug(ns, "eth0", f"p{len(self.namespaces)}")
        for addr in addrs:
            _sh(["ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0"])
        self.public[ns] = list(addrs)
        return ns

    def add_home(
        self, nat: NatType, wan_ip: str, *, second: bool = False, role: str | None = None
    ) -> Home:
        """A router of type ``nat`` on ``wan_ip`` and a home behind it.

        ``second``: the second home of that type (in :attr:`seconds`). With ``role`` the
        home is an extra one (``lab.extra[role]``, namespaces ``r<role>``/``h<role>``). A
        ``wan_ip`` outside the lab's internet /24 is on the same bridge, reached by
        on-link routes."""
        short = role or "".join(w[0] for w in nat.value.split("-")) + ("2" if second else "")
        router, home = self._netns(f"r{short}"), self._netns(f"h{short}")
        self._plug(router, "wan", f"r{short}")
        _sh(["ip", "-n", router, "addr", "add", f"{wan_ip}/24", "dev", "wan"])
        if not wan_ip.startswith(f"{INTERNET}."):
            _sh(["ip", "-n", router, "route", "add", f"{INTERNET}.0/24", "dev", "wan"])
            for ns in self.public:
                _sh(["ip", "-n", ns, "route", "add", f"{wan_ip}/32", "dev", "eth0"])
        _sh(["ip", "link", "add", "lan", "netns", router, "type", "veth",
             "peer", "name", "eth0", "netns", home])  # fmt: skip
        _sh(["ip", "-n", router, "addr", "add", f"{LAN_GW}/24", "dev", "lan"])
        _sh(["ip", "-n", router, "link", "set", "lan", "up"])
        _sh(["ip", "-n", home, "addr", "add", f"{HOME_IP}/24", "dev", "eth0"])
        _sh(["ip", "-n", home, "link", "set", "eth0", "up"])
        _sh(["ip", "-n", home, "route", "add", "default", "via", LAN_GW])
        self.run(router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.run(router, "nft", "-f", "-", stdin=nat_ruleset(nat, wan_ip))
        made = Home(nat, router, home, wan_ip)
        if role is None:
            (self.seconds if second else self.homes)[nat] = made
        else:
            self.extra[role] = made
        return made

    def start_miniupnpd(
        self, home: Home, workdir: Path, *, speaks: str = "upnp"
    ) -> subprocess.Popen[str]:
        """A real UPnP-IGD gateway (Debian ``miniupnpd-nftables``) on ``home``'s router;
        ``speaks`` "pcp": PCP and NAT-PMP instead of UPnP (miniupnpd has them on one
        switch), "natpmp": NAT-PMP only (the router refuses PCP's version 2 packets with
        "port unreachable", as an older gateway's stack does with nothing on the port).

        It listens on the router's LAN side only, maps to the home's LAN, and writes its
        rules into its own nftables table; the lab's forward chains let through what its
        chain accepted (:data:`UPNP_MARK`). Stopped by :meth:`close`."""
        self.run(home.router, "nft", "-f", "-", stdin=_MINIUPNPD_TABLE)
        conf = workdir / "miniupnpd.conf"
        text = _MINIUPNPD_CONF
        if speaks in ("pcp", "natpmp"):
            text = text.replace("enable_upnp=yes", "enable_upnp=no")
            text = text.replace("enable_natpmp=no", "enable_natpmp=yes")
        if speaks == "natpmp":
            self.run(home.router, "nft", "-f", "-", stdin=_NO_PCP)
        conf.write_text(text)
        argv = [_tool("miniupnpd") or "miniupnpd", "-d", "-f", str(conf)]
        argv += ["-P", str(workdir / "miniupnpd.pid")]
        proc = self.popen(
            home.router,
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.processes.append(proc)
        deadline = time.monotonic() + 10
        sockets = ["ss", "-lntp"] if speaks == "upnp" else ["ss", "-lnup"]
        while "miniupnpd" not in self.run(home.router, *sockets):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"miniupnpd did not start (exit {proc.poll()})")
            time.sleep(0.05)
        return proc

    def upnp_rules(self, home: Home) -> str:
        """The port-forwarding rules miniupnpd holds right now (its NAT chain)."""
        chain = ["inet", "miniupnpd", "prerouting_miniupnpd"]
        return self.run(home.router, "nft", "list", "chain", *chain)

    def close(self) -> None:
        """Stop what runs in the lab, then delete every namespace made here (their veths,
        routes and rules go with them)."""
        for proc in self.processes:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.processes.clear()
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        self.namespaces.clear()


def _remove_stale() -> None:
    """Namespaces of an earlier lab whose process is gone (killed before its teardown)."""
    if not NETNS_DIR.is_dir():
        return
    for path in NETNS_DIR.iterdir():
        name = path.name
        if not name.startswith(PREFIX) or "-" not in name:
            continue
        pid = name[len(PREFIX) : name.index("-")]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


#: Where the standard topology puts things.
PUBLIC_ADDRS = [f"{INTERNET}.10", f"{INTERNET}.11", f"{INTERNET}.12"]  # the swarm, reflectors
PUBLIC_HOST = f"{INTERNET}.20"  # one public node of our own
WAN_ADDRS = {nat: f"{INTERNET}.{101 + i}" for i, nat in enumerate(NatType)}
SECOND_WAN_ADDRS = {nat: f"{INTERNET}.{111 + i}" for i, nat in enumerate(NatType)}
#: The WAN address of a home with a UPnP gateway. miniupnpd refuses to map on reserved
#: addresses (TEST-NET-3 among them: "Port forwarding is impossible"), so this one is
#: ordinary unicast space; like the rest it exists only on the lab's internet bridge,
#: which has no link to the host's network.
UPNP_WAN = "198.20.0.104"
#: The WAN address of a home whose gateway speaks NAT-PMP only.
NATPMP_WAN = "198.20.0.105"
#: The WAN address of a home whose gateway speaks PCP (and NAT-PMP), not UPnP.
PCP_WAN = "198.20.0.106"


#: Hosts of the internet-less LAN (:func:`build_lan`).
LAN_ADDRS = ["10.77.0.10", "10.77.0.11", "10.77.0.12"]


@contextlib.contextmanager
def lab_or_skip(*, lan: bool = False, **kw: Sequence[NatType]) -> Iterator[Lab]:
    """:func:`build_lab` (or, with ``lan``, :func:`build_lan`) for a test fixture: the
    test skips, saying what is missing, where the lab cannot be built (and fails under
    CI, see ``harness.skip_unless_ci``)."""
    from harness import skip_unless_ci

    with contextlib.ExitStack() as stack:
        try:
            if (why := unavailable()) is not None:
                raise RuntimeError(why)
            built = stack.enter_context(build_lan() if lan else build_lab(**kw))
        except Exception as exc:
            skip_unless_ci(f"the NAT lab cannot be built: {exc}")
        yield built


@contextlib.contextmanager
def build_lab(
    nats: Sequence[NatType] = tuple(NatType), seconds: Sequence[NatType] = ()
) -> Iterator[Lab]:
    """The standard topology: namespace ``pub`` on :data:`PUBLIC_ADDRS`, ``host`` on
    :data:`PUBLIC_HOST`, one home per NAT type in ``nats`` and a second one per type in
    ``seconds`` (on :data:`SECOND_WAN_ADDRS`). Always torn down."""
    _remove_stale()
    lab = Lab(tag=f"{PREFIX}{os.getpid()}")
    try:
        lab.add_internet()
        lab.add_public("pub", PUBLIC_ADDRS)
        lab.add_public("host", [PUBLIC_HOST])
        for nat in nats:
            lab.add_home(nat, WAN_ADDRS[nat])
        for nat in seconds:
            lab.add_home(nat, SECOND_WAN_ADDRS[nat], second=True)
        yield lab
    finally:
        lab.close()


@contextlib.contextmanager
def build_lan(addrs: Sequence[str] = LAN_ADDRS) -> Iterator[Lab]:
    """A LAN and nothing else: one switch (the ``inet`` bridge, multicast snooping off,
    as a plain switch floods) and a host per address (namespaces ``lan0``, ``lan1``...),
    with no router and no default route: no DHT node is reachable. Always torn down."""
    _remove_stale()
    lab = Lab(tag=f"{PREFIX}{os.getpid()}")
    try:
        lab.add_internet()
        _sh(["ip", "-n", lab.internet, "link", "set", "br0", "type", "bridge",
             "mcast_snooping", "0"])  # fmt: skip
        for i, addr in enumerate(addrs):
            lab.add_public(f"lan{i}", [addr])
        yield lab
    finally:
        lab.close()


async def kill_all(procs: Iterable[subprocess.Popen[Any] | None]) -> None:
    """End a test's daemons (SIGKILL, then reap each): the tests' ``finally``."""
    for proc in procs:
        if proc is not None:
            proc.kill()
            await asyncio.to_thread(proc.wait, 10)
