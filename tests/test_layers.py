"""The architecture, checked: layers import only inward, no import circles, and the
sans-I/O cores import no asyncio, no clock and no socket (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "btchat"

#: Rank of each top-level part of the package: a module may import only parts whose
#: rank is lower than or equal to its own (equal: inside one layer). Keep in step with
#: the layer drawing in docs/ARCHITECTURE.md.
RANKS: dict[str, float] = {
    "__init__": 0,
    "sansio": 0,
    "errors": 0,
    "files": 0,
    "codec": 0,
    "tasks": 0,
    "dht": 1,
    "identity": 1,
    "stream": 2,
    "transfer": 2,
    "storage": 2,
    "session": 3,
    "messaging": 3,
    "offline": 4,
    "channels": 4,
    "discovery": 5,
    "net": 5,
    "sim": 5,
    "sandbox": 6,
    "node": 7,
    "api": 8,
    "cli": 9,
    "tui": 9,  # a front end beside the CLI: `btchat tui` starts it, it shows text the CLI's way
}

#: Modules that sit in another layer than their folder: the asyncio shells of the
#: session and channel cores belong with net/ (they run a core over a transport), and
#: boot, which composes a node with its API server, sits above api/ (with doctor, which
#: unlocks the way boot does). Nothing else in node/ imports api/: the error the node
#: raises for the API is ``errors.ApiError``.
MODULE_RANKS: dict[str, float] = {
    "session.connection": 5,
    "channels.link_connection": 5,
    "channels.service": 5.5,
    "node.boot": 8.5,
    "node.doctor": 8.6,  # mends what boot refuses to start with; uses its unlock
    "node.reader": 8.6,  # reads history with no node running; uses its unlock
}

#: The sans-I/O cores: folders whose every module is a core, and single modules.
CORE_PACKAGES = ("codec", "dht", "stream", "transfer")
CORE_MODULES = (
    "sansio",
    "identity.keys",
    "identity.idtext",
    "identity.linking",
    "identity.linkwords",
    "identity.pow",
    "identity.rendezvous",
    "identity.safety",
    "session.core",
    "session.noise_ik",
    "messaging.envelope",
    "messaging.conversation",
    "offline.packet",
    "offline.mailbox",
    "offline.ratchet",
    "channels.chatfile",
    "channels.keys",
    "channels.members",
    "channels.messages",
    "channels.engine",
    "channels.link",
    "net.portmap",
    "net.tiebreak",
    "net.relay_core",
    "net.dht_proxy_core",
    "discovery.lan_rendezvous",
)
#: What a core must not import: an event loop, threads, a clock, the network.
FORBIDDEN_IN_CORES = ("asyncio", "threading", "selectors", "time", "aiohttp", "sqlite3")
#: ``socket`` is allowed in cores only for address conversion.
SOCKET_OK = {"inet_aton", "inet_ntoa", "inet_pton", "inet_ntop", "AF_INET", "AF_INET6"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(source: str) -> list[tuple[str, int]]:
    """(module, line) of every btchat import, module-level or not, TYPE_CHECKING excluded."""
    tree = ast.parse(source)
    out: list[tuple[str, int]] = []
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "btchat":
                out += [(f"btchat.{a.name}", node.lineno) for a in node.names]
            elif node.module.startswith("btchat."):
                out.append((node.module, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.startswith("btchat.")]
    return out


def _part(module: str) -> str:
    part = module.removeprefix("btchat.").split(".")[0]
    return "__init__" if part.startswith("__") else part


def _rank(module: str) -> float:
    name = module.removeprefix("btchat.")
    while name:
        if name in MODULE_RANKS:
            return MODULE_RANKS[name]
        name = name.rpartition(".")[0]
    return RANKS.get(_part(module), 99)


def _is_core(name: str) -> bool:
    return name.split(".")[0] in CORE_PACKAGES or name in CORE_MODULES


def test_every_part_has_a_rank() -> None:
    assert sorted({_part("btchat." + m) for m in MODULES} - set(RANKS)) == []


def _outward(name: str, source: str) -> list[str]:
    """The imports in module ``name`` (its text ``source``) that point to a higher rank."""
    mine = _rank("btchat." + name)
    return [f"{name}:{line} imports {t}" for t, line in _imports(source) if _rank(t) > mine]


def test_every_module_rank_names_a_module() -> None:
    assert sorted(set(MODULE_RANKS) - set(MODULES)) == []


def test_imports_point_inward() -> None:
    wrong = []
    for name, path in MODULES.items():
        wrong += _outward(name, path.read_text())
    assert wrong == []


def test_the_rank_check_catches_node_importing_api() -> None:
    """The node raises ``errors.ApiError``; reaching into api/ for it is an outward arrow."""
    assert _outward("node.contacts", "from btchat.api.facade import ApiError\n") == [
        "node.contacts:1 imports btchat.api.facade"
    ]
    assert _outward("node.contacts", "from btchat.errors import ApiError\n") == []
    assert _outward("node.boot", "from btchat.api.server import start_api\n") == []


def test_no_import_circles() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in MODULES.items():
        for target, _ in _imports(path.read_text()):
            target = target.removeprefix("btchat.")
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                graph[name].add(target)
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(MODULES):
        if node not in state:
            visit(node, [])
    assert cycles == []


def _io_uses(tree: ast.AST) -> list[str]:
    """What in ``tree`` reaches an event loop, a thread, a clock or the network."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in FORBIDDEN_IN_CORES]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            root = node.module.split(".")[0]
            if root in FORBIDDEN_IN_CORES:
                found.append(node.module)
            if root == "socket":
                found += [a.name for a in node.names if a.name not in SOCKET_OK]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            owner, attr = node.value.id, node.attr
            if owner == "socket" and attr not in SOCKET_OK:
                found.append(f"socket.{attr}")
            if owner in {"datetime", "date"} and attr in {"now", "utcnow", "today"}:
                found.append(f"{owner}.{attr}")
    return found


@pytest.mark.parametrize("name", sorted(n for n in MODULES if _is_core(n)))
def test_cores_do_no_io(name: str) -> None:
    found = _io_uses(ast.parse(MODULES[name].read_text()))
    assert found == [], f"{name} is a sans-I/O core but uses {found}"


def test_the_io_check_catches_clocks_sockets_and_loops() -> None:
    bad = (
        "import time\nimport asyncio.events\nfrom socket import socket, inet_aton\n"
        "import socket\nsocket.create_connection\nsocket.inet_pton\ndatetime.now()\n"
    )
    assert _io_uses(ast.parse(bad)) == [
        "time",
        "asyncio.events",
        "socket",
        "socket.create_connection",
        "datetime.now",
    ]
