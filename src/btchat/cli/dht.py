"""The DHT tools of the command line: ``btchat dht ...`` and ``btchat sandbox``.

One-shot commands run a temporary read-only node (BEP 43) that joins, does one
operation and leaves; ``dht node`` and ``sandbox`` run until interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from btchat.cli.base import UserError, emit, stop_on_signal
from btchat.cli.render import show_value
from btchat.codec.bencode import encode
from btchat.dht import bep44
from btchat.dht.node import NodeConfig
from btchat.net.dht_service import DhtError, DhtService, resolve_addrs
from btchat.node import config

__all__ = ["add_commands", "add_sandbox", "hostport"]


# ------------------------------------------------------------------ arguments


def hostport(text: str) -> tuple[str, int]:
    """``HOST:PORT`` as an argparse type (its message is shown as the usage error)."""
    try:
        return config.parse_hostport(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_id(text: str, size: int = 20) -> bytes:
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not hex") from None
    if len(value) != size:
        raise argparse.ArgumentTypeError(f"expected {size * 2} hex digits, got {len(text)}")
    return value


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """``btchat dht node|ping|announce|get-peers|put|get|keygen``."""
    dht = sub.add_parser("dht", help="talk to the Mainline DHT").add_subparsers(
        dest="dht_command", required=True
    )
    p = dht.add_parser("node", parents=[common], help="run a DHT node until interrupted")
    p.add_argument("--port", type=int, default=None, help="UDP port (default 6881)")
    p.add_argument("--host", default="0.0.0.0", help="address to bind")
    p.add_argument("--state-dir", type=Path, help="where the node id and routing table live")
    p.set_defaults(func=cmd_node)

    p = dht.add_parser("ping", parents=[common], help="ping a DHT node, print its id")
    p.add_argument("addr", type=hostport, metavar="HOST:PORT")
    p.set_defaults(func=cmd_ping)

    p = dht.add_parser("announce", parents=[common], help="announce a peer for an infohash")
    p.add_argument("infohash", type=parse_id, metavar="INFOHASH_HEX")
    p.add_argument("--port", type=int, required=True)
    p.set_defaults(func=cmd_announce)

    p = dht.add_parser("get-peers", parents=[common], help="find peers for an infohash")
    p.add_argument("infohash", type=parse_id, metavar="INFOHASH_HEX")
    p.set_defaults(func=cmd_get_peers)

    p = dht.add_parser("put", parents=[common], help="store a BEP 44 item")
    p.add_argument("value", help="the value (stored as a byte string)")
    p.add_argument("--mutable", action="store_true", help="signed, updatable item")
    p.add_argument("--key-file", type=Path, help="ed25519 key (from `btchat dht keygen`)")
    p.add_argument("--salt", default="", help="mutable item salt (up to 64 bytes)")
    p.add_argument("--seq", type=int, help="sequence number (default: current + 1)")
    p.set_defaults(func=cmd_put)

    p = dht.add_parser("get", parents=[common], help="fetch a BEP 44 item")
    p.add_argument(
        "key",
        metavar="TARGET_HEX|PUBKEY_HEX",
        help="40 hex digits: immutable target; 64 hex digits: mutable item's public key",
    )
    p.add_argument("--salt", default="", help="mutable item salt")
    p.set_defaults(func=cmd_get)

    p = dht.add_parser("keygen", parents=[common], help="write an ed25519 key for mutable puts")
    p.add_argument("--key-file", type=Path, required=True)
    p.set_defaults(func=cmd_keygen)


def add_sandbox(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("sandbox", parents=[common], help="run a private loopback swarm")
    p.add_argument("--nodes", type=int, default=100, help="how many nodes (default 100)")
    p.add_argument("--ipv6", action="store_true", help="dual-stack nodes (BEP 32): on ::1 as well")
    p.set_defaults(func=cmd_sandbox)


# ------------------------------------------------------------------- config


def bootstrap_list(args: argparse.Namespace) -> list[tuple[str, int]]:
    """Option beats environment beats config file beats the public defaults."""
    return settings(args, {}).bootstrap


def settings(args: argparse.Namespace, flags: dict[str, Any]) -> config.Settings:
    """The merged settings for this command (``flags`` as ``None`` = not given)."""
    try:
        return config.resolve(
            {"bootstrap": args.bootstrap, "data_dir": getattr(args, "data_dir", None), **flags},
            config_file=args.config,
        )
    except config.ConfigError as exc:
        raise UserError(str(exc)) from None


ONE_SHOT_CONFIG = NodeConfig(read_only=True)


def refuse_in_tor_mode(args: argparse.Namespace) -> None:
    """DHT packets go from our own IP over UDP, which Tor cannot carry: with Tor mode
    set (flag of ``up``, ``BTCHAT_TOR`` or ``[net] tor`` in the file), refuse."""
    if settings(args, {}).tor:
        raise UserError(
            "Tor mode is on: DHT commands would send UDP from this machine's own address"
        )


@contextlib.asynccontextmanager
async def joined(args: argparse.Namespace) -> AsyncIterator[DhtService]:
    """A joined one-shot node for the length of a command, closed afterwards."""
    service = await joined_service(args)
    try:
        yield service
    finally:
        service.close()


async def joined_service(args: argparse.Namespace) -> DhtService:
    """A temporary node that has joined the DHT, for one-shot commands.

    It is read-only (BEP 43): it will be gone in a moment, so it must not take a place
    in other nodes' routing tables, where it would only cost them timeouts later.
    """
    refuse_in_tor_mode(args)
    service = await DhtService.start(config=ONE_SHOT_CONFIG)
    addrs = await resolve_addrs(bootstrap_list(args))
    if not addrs:
        service.close()
        raise UserError("no bootstrap node could be resolved (offline? try --bootstrap)")
    try:
        await service.bootstrap(addrs)
    except DhtError:
        service.close()
        raise UserError(
            "no DHT node answered (offline, or the bootstrap nodes are unreachable)"
        ) from None
    return service


# ------------------------------------------------------------------ commands


async def cmd_ping(args: argparse.Namespace) -> None:
    refuse_in_tor_mode(args)
    service = await DhtService.start(config=ONE_SHOT_CONFIG)
    try:
        host, port = ((await resolve_addrs([args.addr])) or [args.addr])[0]
        node_id = await service.ping((host, port))
    except DhtError as exc:
        raise UserError(f"{args.addr[0]}:{args.addr[1]} did not answer ({exc})") from None
    finally:
        service.close()
    emit(args, {"node_id": node_id.hex(), "addr": f"{host}:{port}"}, node_id.hex())


async def cmd_announce(args: argparse.Namespace) -> None:
    if not 0 < args.port < 65536:
        raise UserError("--port must be 1-65535")
    async with joined(args) as service:
        result = await service.announce(args.infohash, args.port)
    emit(
        args,
        {"infohash": args.infohash.hex(), "stored_at": result.stored_at, "queries": result.queries},
        f"announced on {result.stored_at} nodes",
    )


async def cmd_get_peers(args: argparse.Namespace) -> None:
    async with joined(args) as service:
        result = await service.get_peers(args.infohash)
    peers = [f"{h}:{p}" for h, p in result.peers]
    emit(
        args,
        {"infohash": args.infohash.hex(), "peers": peers, "queries": result.queries},
        "\n".join(peers) if peers else "no peers found",
    )


def load_key(path: Path) -> Ed25519PrivateKey:
    try:
        seed = bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        raise UserError(
            f"key file {path} does not exist (create it with `btchat dht keygen`)"
        ) from None
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read key file {path}: {exc}") from None
    if len(seed) != 32:
        raise UserError(f"key file {path} does not hold a 32-byte ed25519 seed")
    return Ed25519PrivateKey.from_private_bytes(seed)


async def cmd_keygen(args: argparse.Namespace) -> None:
    from cryptography.hazmat.primitives import serialization

    if args.key_file.exists():
        raise UserError(f"{args.key_file} already exists; refusing to overwrite a key")
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    fd = os.open(args.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(seed.hex() + "\n")
    public = key.public_key().public_bytes_raw()
    emit(args, {"public_key": public.hex(), "key_file": str(args.key_file)}, public.hex())


async def cmd_put(args: argparse.Namespace) -> None:
    v_bencoded = encode(args.value.encode())
    if len(v_bencoded) > bep44.MAX_VALUE_SIZE:
        raise UserError(f"value is {len(v_bencoded)} bytes bencoded; BEP 44 allows 1000")
    if not args.mutable:
        async with joined(args) as service:
            result = await service.put_immutable(v_bencoded)
        emit(
            args,
            {"target": result.target.hex(), "stored_at": result.stored_at},
            result.target.hex(),
        )
        return
    if args.key_file is None:
        raise UserError("--mutable needs --key-file (create one with `btchat dht keygen`)")
    key = load_key(args.key_file)
    salt = args.salt.encode()
    if len(salt) > bep44.MAX_SALT_SIZE:
        raise UserError("--salt is longer than 64 bytes")
    public = key.public_key().public_bytes_raw()
    async with joined(args) as service:
        seq = args.seq
        if seq is None:
            current = await service.get_mutable(public, salt)
            seq = 1 if current.seq is None else current.seq + 1
        item = bep44.sign_mutable(key, v_bencoded, seq, salt)
        result = await service.put_mutable(item)
    emit(
        args,
        {
            "public_key": public.hex(),
            "seq": seq,
            "target": result.target.hex(),
            "stored_at": result.stored_at,
        },
        f"{public.hex()} seq {seq}",
    )


async def cmd_get(args: argparse.Namespace) -> None:
    try:
        key = bytes.fromhex(args.key)
    except ValueError:
        raise UserError(f"{args.key!r} is not hex") from None
    if len(key) not in (20, 32):
        raise UserError("expected a 40-hex-digit target or a 64-hex-digit public key")
    async with joined(args) as service:
        if len(key) == 20:
            result = await service.get_immutable(key)
        else:
            result = await service.get_mutable(key, args.salt.encode())
    if result.value is None:
        raise UserError("item not found in the DHT")
    shown = show_value(result.value)
    emit(
        args,
        {"value": shown, "seq": result.seq},
        f"{shown}" if result.seq is None else f"{shown}\nseq {result.seq}",
    )


async def cmd_node(args: argparse.Namespace) -> None:
    refuse_in_tor_mode(args)
    port = settings(args, {"dht_port": args.port}).dht_port
    state_dir = args.state_dir
    if state_dir is None:
        from platformdirs import user_state_dir

        state_dir = Path(user_state_dir("btchat")) / "dht"
    stop = stop_on_signal()
    try:
        service = await DhtService.start(host=args.host, port=port, state_dir=state_dir)
    except OSError as exc:
        raise UserError(f"cannot bind UDP {args.host}:{port}: {exc.strerror}") from None
    host, bound = service.addr
    emit(
        args,
        {"node_id": service.node_id.hex(), "addr": f"{host}:{bound}", "state_dir": str(state_dir)},
        f"DHT node {service.node_id.hex()} listening on {host}:{bound}",
    )
    joiner = asyncio.create_task(keep_joining(service, args))
    try:
        await stop.wait()
    finally:
        joiner.cancel()
        service.close()


async def keep_joining(service: DhtService, args: argparse.Namespace) -> None:
    """Join now; when offline, say so plainly (one line per attempt) and keep trying."""
    delay = 5.0
    while len(service.node.routing) == 0:
        addrs = await resolve_addrs(bootstrap_list(args))
        if not addrs:
            why = "cannot resolve any bootstrap node (no network or DNS?)"
        else:
            try:
                nodes = await service.bootstrap(addrs)
            except DhtError:
                why = "no DHT node answered"
            else:
                print(
                    f"joined the DHT: {len(nodes)} close nodes, "
                    f"{len(service.node.routing)} in the routing table",
                    file=sys.stderr,
                )
                return
        print(f"{why}; retrying in {delay:.0f} s", file=sys.stderr)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 300.0)


async def cmd_sandbox(args: argparse.Namespace) -> None:
    from btchat.sandbox import start_swarm

    if args.nodes < 1:
        raise UserError("--nodes must be at least 1")
    stop = stop_on_signal()
    swarm = await start_swarm(args.nodes, hosts6=("::1",) if args.ipv6 else ())
    host, port = swarm.bootstrap_addr
    out: dict[str, Any] = {"bootstrap": f"{host}:{port}", "nodes": args.nodes}
    text = f"sandbox of {args.nodes} nodes; bootstrap: {host}:{port}"
    if (addr6 := swarm.services[0].addr6) is not None:
        out["bootstrap6"] = f"[{addr6[0]}]:{addr6[1]}"
        text += f" and {out['bootstrap6']}"
    emit(args, out, text)
    try:
        await stop.wait()
    finally:
        swarm.close()
