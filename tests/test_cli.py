"""The ``btchat`` command line, run as real subprocesses against a loopback sandbox.

Every command here talks only to 127.0.0.1: each one gets ``--bootstrap`` (or
``BTCHAT_BOOTSTRAP``), and ``BTCHAT_CONFIG`` points at a config file written by the test
whose own bootstrap list is a closed loopback port, so neither a user's config nor the
public routers can ever be reached.

The contract under test: ``--json`` prints one JSON object on stdout; exit 0 on success,
exit 1 with a one-line error on stderr for runtime errors, exit 2 (argparse) for usage
errors.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

HEX40 = re.compile(r"[0-9a-f]{40}")
HEX64 = re.compile(r"[0-9a-f]{64}")
#: Generous upper bound for one one-shot command against the sandbox.
CMD_TIMEOUT = 30.0


def _btchat_argv() -> list[str]:
    script = Path(sys.executable).with_name("btchat")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "btchat.cli"]


BTCHAT = _btchat_argv()


def closed_udp_port() -> int:
    """A loopback UDP port that was free a moment ago and now has no listener."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------ process helpers


class Proc:
    """A long-running ``btchat`` process whose stdout/stderr lines can be awaited."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.popen = subprocess.Popen(
            [*BTCHAT, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: dict[str, queue.Queue[str | None]] = {}
        self.seen: dict[str, list[str]] = {}
        self._threads = []
        for name in ("stdout", "stderr"):
            q: queue.Queue[str | None] = queue.Queue()
            self.lines[name] = q
            self.seen[name] = []
            t = threading.Thread(
                target=self._pump, args=(getattr(self.popen, name), q), daemon=True
            )
            t.start()
            self._threads.append(t)

    @staticmethod
    def _pump(stream, q: queue.Queue[str | None]) -> None:
        for line in stream:
            q.put(line)
        q.put(None)

    def next_line(self, name: str = "stdout", timeout: float = 20.0) -> str:
        """The next line of ``name``; fails the test on EOF or timeout."""
        try:
            line = self.lines[name].get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no {name} line from btchat within {timeout} s")
        if line is None:
            self.popen.wait(timeout=5)
            pytest.fail(
                f"btchat closed {name} (exit {self.popen.returncode}); "
                f"stderr so far: {''.join(self.seen['stderr'])!r}"
            )
        self.seen[name].append(line)
        return line

    def wait_for(self, name: str, needle: str, timeout: float) -> str:
        """Read ``name`` until a line contains ``needle``; fails the test on timeout."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            line = self.next_line(name, timeout=left)
            if needle in line:
                return line
        pytest.fail(f"{needle!r} not seen on {name} within {timeout} s: {self.seen[name]!r}")

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM, then wait; returns the exit code (killing the process if it hangs)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=5)
            pytest.fail(f"btchat did not exit within {timeout} s of SIGTERM")
        finally:
            for t in self._threads:
                t.join(timeout=5)
            for stream in (self.popen.stdout, self.popen.stderr):
                if stream is not None:
                    stream.close()

    def rest(self, name: str) -> str:
        """Everything ``name`` printed after the lines already read (process must be done)."""
        out = []
        while True:
            try:
                line = self.lines[name].get_nowait()
            except queue.Empty:
                break
            if line is not None:
                out.append(line)
        return "".join(out)

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            if self.popen.poll() is None:
                self.popen.kill()
            self.terminate(timeout=5)


# ------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def base_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment with no way out of loopback and no user config or state."""
    home = tmp_path_factory.mktemp("cli-home")
    config = home / "config.toml"
    # A last line of defence: if option and environment were ever ignored, the config
    # file's bootstrap list still keeps every command on loopback.
    config.write_text(f'[dht]\nbootstrap = ["127.0.0.1:{closed_udp_port()}"]\n')
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("BTCHAT_") and k not in ("XDG_CONFIG_HOME", "XDG_STATE_HOME")
    }
    env.update(
        BTCHAT_CONFIG=str(config),
        BTCHAT_BOOTSTRAP=f"127.0.0.1:{closed_udp_port()}",
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_STATE_HOME=str(home / "state"),
        XDG_DATA_HOME=str(home / "data"),
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture(scope="module")
def sandbox(base_env: dict[str, str]) -> Iterator[str]:
    """``btchat sandbox --nodes 30 --json``; yields its bootstrap ``HOST:PORT``."""
    proc = Proc(["sandbox", "--nodes", "30", "--json"], base_env)
    try:
        info = json.loads(proc.next_line("stdout", timeout=30))
        assert set(info) >= {"bootstrap", "nodes"}
        assert info["nodes"] == 30
        host, _, port = info["bootstrap"].rpartition(":")
        assert host == "127.0.0.1"
        assert 0 < int(port) < 65536
    except BaseException:
        proc.kill()
        raise
    yield info["bootstrap"]
    code = proc.terminate()
    stderr = proc.rest("stderr")
    assert code == 0, f"sandbox exited {code} on SIGTERM; stderr: {stderr!r}"
    assert "Traceback" not in stderr
    assert proc.rest("stdout") == ""


@pytest.fixture
def env(base_env: dict[str, str], sandbox: str) -> dict[str, str]:
    return {**base_env, "BTCHAT_BOOTSTRAP": sandbox}


def btchat(
    env: dict[str, str], *args: str, timeout: float = CMD_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BTCHAT, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def ok_json(result: subprocess.CompletedProcess[str]) -> dict:
    """Exit 0 and exactly one JSON object on stdout."""
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    obj = json.loads(lines[0])
    assert isinstance(obj, dict)
    return obj


def runtime_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit 1, nothing on stdout, one ``btchat: ...`` line on stderr; returns it."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected a one-line error, got: {result.stderr!r}"
    line = lines[0]
    assert line.startswith("btchat: "), line
    for needle in needles:
        assert needle in line.lower(), line
    return line


def usage_error(result: subprocess.CompletedProcess[str]) -> None:
    """argparse's documented behaviour: usage on stderr, exit 2."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    assert "error:" in result.stderr
    assert "Traceback" not in result.stderr


def random_infohash() -> str:
    return os.urandom(20).hex()


# ------------------------------------------------------------------------- sandbox


def test_sandbox_rejects_zero_nodes(base_env: dict[str, str]) -> None:
    runtime_error(btchat(base_env, "sandbox", "--nodes", "0", "--json"), "--nodes")


# ---------------------------------------------------------------------------- ping


def test_ping_sandbox_bootstrap(env: dict[str, str], sandbox: str) -> None:
    obj = ok_json(btchat(env, "dht", "ping", sandbox, "--bootstrap", sandbox, "--json"))
    assert HEX40.fullmatch(obj["node_id"])
    assert obj["addr"] == sandbox

    plain = btchat(env, "dht", "ping", sandbox, "--bootstrap", sandbox)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.strip() == obj["node_id"]


def test_ping_dead_port(env: dict[str, str], sandbox: str) -> None:
    dead = f"127.0.0.1:{closed_udp_port()}"
    result = btchat(env, "dht", "ping", dead, "--bootstrap", sandbox, "--json")
    runtime_error(result, dead, "did not answer")


# ------------------------------------------------------------------ announce / peers


def test_announce_then_get_peers(env: dict[str, str], sandbox: str) -> None:
    infohash = random_infohash()
    port = 20000 + int.from_bytes(os.urandom(2), "big") % 40000

    announce = ["dht", "announce", infohash, "--port", str(port), "--bootstrap", sandbox]
    obj = ok_json(btchat(env, *announce, "--json"))
    assert obj["infohash"] == infohash
    assert obj["stored_at"] >= 1
    assert isinstance(obj["queries"], int)

    # Another process, which only knows the sandbox, finds the peer.
    obj = ok_json(btchat(env, "dht", "get-peers", infohash, "--bootstrap", sandbox, "--json"))
    assert obj["infohash"] == infohash
    assert f"127.0.0.1:{port}" in obj["peers"]
    assert isinstance(obj["queries"], int)

    # Plain output, bootstrap from BTCHAT_BOOTSTRAP alone (no --bootstrap): one peer a line.
    plain = btchat(env, "dht", "get-peers", infohash)
    assert plain.returncode == 0, plain.stderr
    assert f"127.0.0.1:{port}" in plain.stdout.splitlines()


# ---------------------------------------------------------------- immutable items


def test_put_get_immutable(env: dict[str, str], sandbox: str) -> None:
    value = f"hello {uuid.uuid4()}"
    expected_target = hashlib.sha1(f"{len(value)}:{value}".encode()).hexdigest()

    obj = ok_json(btchat(env, "dht", "put", value, "--bootstrap", sandbox, "--json"))
    assert set(obj) >= {"target", "stored_at"}
    assert obj["target"] == expected_target  # BEP 44: SHA-1 of the bencoded value
    assert obj["stored_at"] >= 1

    obj = ok_json(btchat(env, "dht", "get", expected_target, "--bootstrap", sandbox, "--json"))
    assert obj == {"value": value, "seq": None}

    plain = btchat(env, "dht", "get", expected_target, "--bootstrap", sandbox)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout == f"{value}\n"


def test_put_value_of_exactly_1000_bencoded_bytes(env: dict[str, str], sandbox: str) -> None:
    value = uuid.uuid4().hex + "x" * (996 - 32)  # "996:" + 996 bytes = 1000
    plain = btchat(env, "dht", "put", value, "--bootstrap", sandbox)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout == hashlib.sha1(f"996:{value}".encode()).hexdigest() + "\n"


def test_put_value_over_1000_bytes(env: dict[str, str], sandbox: str) -> None:
    result = btchat(env, "dht", "put", "x" * 997, "--bootstrap", sandbox, "--json")
    runtime_error(result, "1000")


def test_get_missing_target(env: dict[str, str], sandbox: str) -> None:
    result = btchat(env, "dht", "get", os.urandom(20).hex(), "--bootstrap", sandbox, "--json")
    runtime_error(result, "not found")


# ------------------------------------------------------------------ mutable items


def test_keygen(env: dict[str, str], tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    obj = ok_json(btchat(env, "dht", "keygen", "--key-file", str(key_file), "--json"))
    assert HEX64.fullmatch(obj["public_key"])
    assert obj["key_file"] == str(key_file)
    assert key_file.stat().st_mode & 0o777 == 0o600
    seed = key_file.read_text()
    assert HEX64.fullmatch(seed.strip())

    again = btchat(env, "dht", "keygen", "--key-file", str(key_file), "--json")
    runtime_error(again, "already exists")
    assert key_file.read_text() == seed  # the key was not touched

    plain = btchat(env, "dht", "keygen", "--key-file", str(tmp_path / "key2"))
    assert plain.returncode == 0, plain.stderr
    assert HEX64.fullmatch(plain.stdout.strip())


def test_mutable_put_get_and_seq(env: dict[str, str], sandbox: str, tmp_path: Path) -> None:
    key_file = str(tmp_path / "key")
    public = ok_json(btchat(env, "dht", "keygen", "--key-file", key_file, "--json"))["public_key"]
    salt = f"salt-{uuid.uuid4().hex[:8]}"
    common = ["--mutable", "--key-file", key_file, "--salt", salt, "--bootstrap", sandbox]
    get = ["dht", "get", public, "--salt", salt, "--bootstrap", sandbox]

    obj = ok_json(btchat(env, "dht", "put", "first", *common, "--json"))
    assert obj["public_key"] == public
    assert obj["seq"] == 1  # nothing stored yet: current + 1
    # BEP 44: a mutable item's target is SHA-1(public key + salt), so the salt was used.
    target = hashlib.sha1(bytes.fromhex(public) + salt.encode()).hexdigest()
    assert obj["target"] == target
    assert obj["stored_at"] >= 1

    got = ok_json(btchat(env, *get, "--json"))
    assert got == {"value": "first", "seq": 1}

    # Without --seq the CLI reads the current seq and stores current + 1.
    obj = ok_json(btchat(env, "dht", "put", "second", *common, "--json"))
    assert (obj["public_key"], obj["seq"], obj["target"]) == (public, 2, target)

    # A lower seq than the stored one is refused by every storing node (BEP 44, 302).
    low = btchat(env, "dht", "put", "stale", *common, "--seq", "1", "--json")
    runtime_error(low, "sequence number")

    plain = btchat(env, *get)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout == "second\nseq 2\n"  # not downgraded

    # An explicit higher --seq is taken as given; plain output is "PUBKEY seq N".
    plain = btchat(env, "dht", "put", "third", *common, "--seq", "7")
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout == f"{public} seq 7\n"


def test_mutable_put_needs_a_key(env: dict[str, str], sandbox: str, tmp_path: Path) -> None:
    result = btchat(env, "dht", "put", "v", "--mutable", "--bootstrap", sandbox, "--json")
    runtime_error(result, "--key-file")
    missing = str(tmp_path / "nope")
    result = btchat(
        env, "dht", "put", "v", "--mutable", "--key-file", missing, "--bootstrap", sandbox
    )
    runtime_error(result, "does not exist")


# -------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("command", "infohash"),
    [("announce", "zz"), ("get-peers", "abcd"), ("announce", "g" * 40), ("get-peers", "a" * 42)],
)
def test_malformed_infohash_is_a_usage_error(
    base_env: dict[str, str], command: str, infohash: str
) -> None:
    extra = ["--port", "6881"] if command == "announce" else []
    bootstrap = f"127.0.0.1:{closed_udp_port()}"
    usage_error(btchat(base_env, "dht", command, infohash, *extra, "--bootstrap", bootstrap))


@pytest.mark.parametrize("bad", ["nohost", "127.0.0.1:0", "127.0.0.1:70000", ":6881"])
def test_malformed_bootstrap_is_a_usage_error(base_env: dict[str, str], bad: str) -> None:
    usage_error(btchat(base_env, "dht", "get-peers", "a" * 40, "--bootstrap", bad))


def test_announce_port_out_of_range(env: dict[str, str], sandbox: str) -> None:
    result = btchat(env, "dht", "announce", "a" * 40, "--port", "0", "--bootstrap", sandbox)
    runtime_error(result, "--port")


@pytest.mark.parametrize("key", ["xyz", "ab" * 10 + "ab"])
def test_get_malformed_key_is_a_runtime_error(base_env: dict[str, str], key: str) -> None:
    """``get`` validates its key itself (20 or 32 bytes), so it exits 1, not 2."""
    bootstrap = f"127.0.0.1:{closed_udp_port()}"
    runtime_error(btchat(base_env, "dht", "get", key, "--bootstrap", bootstrap, "--json"))


# ---------------------------------------------------------------------------- node


def start_node(env: dict[str, str], state_dir: Path, bootstrap: str) -> tuple[Proc, dict]:
    proc = Proc(
        [
            "dht", "node", "--port", "0", "--host", "127.0.0.1",
            "--state-dir", str(state_dir), "--bootstrap", bootstrap, "--json",
        ],
        env,
    )  # fmt: skip
    try:
        info = json.loads(proc.next_line("stdout", timeout=20))
    except BaseException:
        proc.kill()
        raise
    return proc, info


def test_node_keeps_its_id_across_restarts(
    env: dict[str, str], sandbox: str, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    proc, info = start_node(env, state_dir, sandbox)
    try:
        assert HEX40.fullmatch(info["node_id"])
        host, _, port = info["addr"].rpartition(":")
        assert host == "127.0.0.1"
        assert 0 < int(port) < 65536
        assert info["state_dir"] == str(state_dir)
        proc.wait_for("stderr", "joined the DHT", timeout=15)
    finally:
        code = proc.terminate()
    assert code == 0, proc.rest("stderr")

    state = json.loads((state_dir / "dht_state.json").read_text())
    assert state["node_id"] == info["node_id"]

    proc, again = start_node(env, state_dir, sandbox)
    try:
        assert again["node_id"] == info["node_id"]
    finally:
        code = proc.terminate()
    assert code == 0, proc.rest("stderr")


def test_node_sigterm_right_after_ready_line(
    env: dict[str, str], sandbox: str, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    proc, _ = start_node(env, state_dir, sandbox)
    code = proc.terminate()
    assert code == 0
    assert (state_dir / "dht_state.json").exists()


def test_node_with_unreachable_bootstrap_keeps_running(env: dict[str, str], tmp_path: Path) -> None:
    dead = f"127.0.0.1:{closed_udp_port()}"
    proc, info = start_node(env, tmp_path / "state", dead)
    try:
        assert HEX40.fullmatch(info["node_id"])
        line = proc.wait_for("stderr", "no DHT node answered", timeout=12)
        assert "retrying" in line
        assert proc.popen.poll() is None  # still running, still trying
    finally:
        code = proc.terminate()
    assert code == 0, proc.rest("stderr")


def test_status_text_says_what_network_we_are_on() -> None:
    from btchat.cli.chat import network_text

    seen = {"external_ip": "203.0.113.104", "external_port": None, "label": "symmetric"}
    status = {
        "dht": {"addr": "192.168.1.10:6881", "external_addr": None, "reachability": seen},
        "port_mapping": {
            "state": "failed",
            "external_ip": None,
            "mappings": {},
            "error": "UDP port 6881: ConflictInMappingEntry",
        },
    }
    text = network_text(status)
    assert "network: symmetric; external address 203.0.113.104 (the port differs" in text
    assert "(bound to 192.168.1.10:6881)" in text
    assert "port mapping (UPnP): failed: UDP port 6881: ConflictInMappingEntry" in text
    mapped = {"external_port": 40000, "internal_port": 6881, "lease": 3600, "expires_in": 9}
    pcp = {"state": "mapped", "gateway": "pcp://192.168.1.1", "external_ip": "198.51.100.7"}
    status["port_mapping"] = {**pcp, "mappings": {"udp": mapped}, "error": None}
    text = network_text(status)
    assert "port mapping (PCP): mapped: udp 198.51.100.7:40000 -> 6881" in text


def test_contact_add_with_the_name_first_says_the_order(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    result = btchat(base_env, "contact", "add", "bob", "bt-abcd", "--data-dir", str(tmp_path))
    assert "btchat contact add bt-abcd bob" in runtime_error(result, "the id comes first")


def test_contact_add_from_a_picture_of_a_qr_code(base_env: dict[str, str], tmp_path: Path) -> None:
    import segno

    dd = ["--data-dir", str(tmp_path)]
    assert "give their ID" in runtime_error(btchat(base_env, "contact", "add", *dd), "give")
    missing = btchat(base_env, "contact", "add", "--qr", str(tmp_path / "none.png"), *dd)
    assert "cannot read" in runtime_error(missing, "cannot read")
    (tmp_path / "note.txt").write_text("not a picture")
    text = btchat(base_env, "contact", "add", "--qr", str(tmp_path / "note.txt"), "bob", *dd)
    assert "not a picture" in runtime_error(text, "not a picture")
    segno.make_qr("bt-abcd").save(str(tmp_path / "id.png"), scale=5)
    two = btchat(base_env, "contact", "add", "--qr", str(tmp_path / "id.png"), "bob", "x", *dd)
    assert "give only the petname" in runtime_error(two, "only the petname")
    # Read: what follows is adding it, which needs the daemon.
    read = btchat(base_env, "contact", "add", "--qr", str(tmp_path / "id.png"), "bob", *dd)
    assert "no btchat daemon is running" in runtime_error(read, "daemon")
