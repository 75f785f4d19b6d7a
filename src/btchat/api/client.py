"""The CLI's side of the local API: a small synchronous client and the discovery files.

Synchronous (urllib) so one-shot CLI commands and scripts need no event loop; only the
event stream, which is inherently long-lived, is async.

Discovery: the daemon writes ``api.json`` (URL and pid) and ``api.token`` (mode 0600) in
the data directory; the token file's permissions are what keep other users out.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from btchat.api.facade import ApiError
from btchat.files import write_atomic
from btchat.messaging.contacts import ContactChange

__all__ = [
    "API_FILE",
    "TOKEN_FILE",
    "ApiClient",
    "ApiClientError",
    "DaemonNotRunning",
    "new_token",
    "read_api_files",
    "remove_api_files",
    "watch_events",
    "write_api_files",
]

API_FILE = "api.json"
TOKEN_FILE = "api.token"
NOT_RUNNING = "no btchat daemon is running (start it with `btchat up`)"


class DaemonNotRunning(Exception):
    """Nothing to talk to: no API files, a dead pid, or nobody listening."""

    def __init__(self, message: str = NOT_RUNNING) -> None:
        super().__init__(message)


class ApiClientError(ApiError):
    """The daemon answered with an error (``status`` 0: no usable answer at all).

    The same three parts as the server's :class:`ApiError`, as the client received them.
    """


def new_token() -> str:
    """A fresh bearer token for one daemon run (256 bits)."""
    return secrets.token_urlsafe(32)


# ------------------------------------------------------------------ discovery files


def write_api_files(data_dir: Path, url: str, token: str) -> None:
    """Publish where the API is; the token first, so ``api.json`` never points at no token."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(data_dir / TOKEN_FILE, token.encode(), mode=0o600)
    info = {"url": url, "pid": os.getpid()}
    write_atomic(data_dir / API_FILE, json.dumps(info).encode(), mode=0o644)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        try:
            kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        finally:
            kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, but belongs to someone else
    return True


def _read_info(data_dir: Path) -> dict[str, Any] | None:
    try:
        info = json.loads((Path(data_dir) / API_FILE).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def read_api_files(data_dir: Path) -> tuple[str, str]:
    """``(url, token)`` of the running daemon, or :class:`DaemonNotRunning`."""
    info = _read_info(data_dir)
    if info is None:
        raise DaemonNotRunning()
    url, pid = info.get("url"), info.get("pid")
    if not isinstance(url, str) or not isinstance(pid, int) or not _pid_alive(pid):
        raise DaemonNotRunning()
    try:
        token = (Path(data_dir) / TOKEN_FILE).read_text().strip()
    except OSError:
        raise DaemonNotRunning() from None
    if not token:
        raise DaemonNotRunning()
    return url, token


def remove_api_files(data_dir: Path) -> None:
    """Withdraw the files, unless another live daemon has replaced them since."""
    info = _read_info(data_dir)
    pid = info.get("pid") if info else None
    if isinstance(pid, int) and pid != os.getpid() and _pid_alive(pid):
        return
    for name in (API_FILE, TOKEN_FILE):
        with contextlib.suppress(FileNotFoundError):
            (Path(data_dir) / name).unlink()


# ------------------------------------------------------------------ HTTP client


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow redirects: they would carry the token somewhere else."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _refused(exc: BaseException) -> bool:
    """Is this "nobody is listening" (as opposed to a slow or broken daemon)?"""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    return isinstance(reason, ConnectionRefusedError | FileNotFoundError) or (
        isinstance(reason, OSError) and reason.errno in (61, 111, 10061)  # ECONNREFUSED
    )


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


class ApiClient:
    """Blocking calls to the daemon, one method per facade method, same arguments."""

    def __init__(self, base_url: str, token: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        # No proxies: a proxy from the environment would receive the bearer token.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())

    def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        query: dict[str, Any] | None = None,
    ) -> Any:
        url = self.base_url + path
        if query:
            params = {k: v for k, v in query.items() if v is not None}
            if params:
                url += "?" + urllib.parse.urlencode(params)
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            raise self._error(exc) from None
        except urllib.error.URLError as exc:
            if _refused(exc):
                raise DaemonNotRunning() from None
            if isinstance(exc.reason, TimeoutError):
                raise ApiClientError(0, "timeout", "the daemon did not answer in time") from None
            raise ApiClientError(
                0, "unreachable", f"cannot reach the daemon: {exc.reason}"
            ) from None
        except TimeoutError:
            raise ApiClientError(0, "timeout", "the daemon did not answer in time") from None
        except ConnectionError as exc:
            if _refused(exc):
                raise DaemonNotRunning() from None
            raise ApiClientError(
                0, "unreachable", f"connection to the daemon failed: {exc}"
            ) from None
        if status == 204 or not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiClientError(status, "bad_response", "the daemon sent invalid JSON") from None

    @staticmethod
    def _error(exc: urllib.error.HTTPError) -> ApiClientError:
        try:
            raw = exc.read()
        except OSError:
            raw = b""
        finally:
            exc.close()
        try:
            err = json.loads(raw)["error"]
            return ApiClientError(exc.code, str(err["code"]), str(err["message"]))
        except (ValueError, KeyError, TypeError):
            return ApiClientError(exc.code, f"http_{exc.code}", str(exc.reason))

    # -------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        return self._request("GET", "/v1/status")

    def identity(self) -> dict[str, Any]:
        return self._request("GET", "/v1/identity")

    # -------------------------------------------------------------- contacts

    def list_contacts(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/contacts")["contacts"]

    def add_contact(self, ref: str, name: str | None = None) -> dict[str, Any]:
        return self._request("POST", "/v1/contacts", {"ref": ref, "name": name})

    def get_contact(self, c: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/contacts/{_q(c)}")

    def update_contact(self, c: str, change: ContactChange) -> dict[str, Any]:
        return self._request("PATCH", f"/v1/contacts/{_q(c)}", change.given())

    def remove_contact(self, c: str) -> None:
        self._request("DELETE", f"/v1/contacts/{_q(c)}")

    def safety_number(self, c: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/contacts/{_q(c)}/safety-number")

    def list_devices(self) -> dict[str, Any]:
        return self._request("GET", "/v1/devices")

    def revoke_device(self, device: str) -> dict[str, Any]:
        return self._request("DELETE", f"/v1/devices/{_q(device)}")

    def rename_device(self, device: str, name: str) -> dict[str, Any]:
        return self._request("PATCH", f"/v1/devices/{_q(device)}", {"name": name})

    def dial_contact(self, c: str, address: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/contacts/{_q(c)}/dial", {"address": address})

    # -------------------------------------------------------------- messages

    def send_message(self, c: str, text: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/contacts/{_q(c)}/messages", {"text": text})

    def history(self, c: str, limit: int = 50, before: int | None = None) -> list[dict[str, Any]]:
        query = {"limit": limit, "before": before}
        return self._request("GET", f"/v1/contacts/{_q(c)}/messages", query=query)["messages"]

    def search(self, q: str, contact: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        query = {"q": q, "contact": contact, "limit": limit}
        return self._request("GET", "/v1/search", query=query)["messages"]

    def mark_read(self, c: str, up_to: str | None = None) -> dict[str, Any]:
        body = {"up_to": up_to} if up_to is not None else {}
        return self._request("POST", f"/v1/contacts/{_q(c)}/read", body)

    def set_presence(self, status: str, note: str | None = None) -> dict[str, Any]:
        return self._request("PUT", "/v1/presence", {"status": status, "note": note})

    def get_profile(self) -> dict[str, Any]:
        return self._request("GET", "/v1/profile")

    def set_profile(
        self, name: str | None = None, status: str | None = None, avatar: str | None = None
    ) -> dict[str, Any]:
        return self._request(
            "PUT", "/v1/profile", {"name": name, "status": status, "avatar": avatar}
        )

    def get_settings(self) -> dict[str, Any]:
        return self._request("GET", "/v1/settings")

    def save_settings(self, changes: dict[str, Any]) -> dict[str, Any]:
        return self._request("PUT", "/v1/settings", changes)

    # -------------------------------------------------------------- files

    def send_file(self, c: str, path: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/contacts/{_q(c)}/files", {"path": path})

    def set_file_limit(self, c: str, max_bytes: int) -> dict[str, Any]:
        body = {"max_bytes": max_bytes}
        return self._request("PUT", f"/v1/contacts/{_q(c)}/files/limit", body)

    def list_transfers(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/files")["transfers"]

    def get_transfer(self, tid: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/files/{_q(tid)}")

    def act_on_transfer(self, tid: str, action: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/files/{_q(tid)}", {"action": action})

    # -------------------------------------------------------------- devices

    def link_device(self) -> dict[str, Any]:
        return self._request("POST", "/v1/devices/link")

    def cancel_link(self) -> None:
        self._request("DELETE", "/v1/devices/link")

    # -------------------------------------------------------------- channels

    def list_channels(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/channels")["channels"]

    def create_channel(
        self, name: str, invite_only: bool = False, trackers: list[str] | None = None
    ) -> dict[str, Any]:
        body = {"name": name, "invite_only": invite_only, "trackers": trackers or []}
        return self._request("POST", "/v1/channels", body)

    def join_channel(self, chatfile: str) -> dict[str, Any]:
        return self._request("POST", "/v1/channels/join", {"chatfile": chatfile})

    def get_channel(self, ch: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/channels/{_q(ch)}")

    def leave_channel(self, ch: str) -> None:
        self._request("DELETE", f"/v1/channels/{_q(ch)}")

    def channel_members(self, ch: str) -> list[dict[str, Any]]:
        return self._request("GET", f"/v1/channels/{_q(ch)}/members")["members"]

    def change_channel_members(
        self, ch: str, add: list[str] | None = None, remove: list[str] | None = None
    ) -> dict[str, Any]:
        body = {"add": add or [], "remove": remove or []}
        return self._request("POST", f"/v1/channels/{_q(ch)}/members", body)

    def channel_history(self, ch: str, limit: int = 50) -> list[dict[str, Any]]:
        path = f"/v1/channels/{_q(ch)}/messages"
        return self._request("GET", path, query={"limit": limit})["messages"]

    def dial_channel_member(self, ch: str, address: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/channels/{_q(ch)}/dial", {"address": address})

    def post_channel(self, ch: str, text: str, to: list[str] | None = None) -> dict[str, Any]:
        body = {"text": text, "to": to or []}
        return self._request("POST", f"/v1/channels/{_q(ch)}/messages", body)

    def send_channel_file(self, ch: str, path: str, name: str | None = None) -> dict[str, Any]:
        body = {"path": path, **({"name": name} if name else {})}
        return self._request("POST", f"/v1/channels/{_q(ch)}/files", body)

    def list_channel_files(self, ch: str) -> list[dict[str, Any]]:
        return self._request("GET", f"/v1/channels/{_q(ch)}/files")["files"]

    def act_on_channel_file(self, ch: str, fid: str, action: str) -> dict[str, Any]:
        path = f"/v1/channels/{_q(ch)}/files/{_q(fid)}"
        return self._request("POST", path, {"action": action})

    def set_channel_serving(self, ch: str, serve: bool) -> dict[str, Any]:
        return self._request("PUT", f"/v1/channels/{_q(ch)}/files/serving", {"serve": serve})

    def send_typing(self, c: str, on: bool) -> None:
        self._request("POST", f"/v1/contacts/{_q(c)}/typing", {"on": on})

    # -------------------------------------------------------------- requests

    def list_requests(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/requests")["requests"]

    def send_request(self, ref: str, note: str | None = None) -> dict[str, Any]:
        return self._request("POST", "/v1/requests", {"ref": ref, "note": note})

    def answer_request(self, id: str, accept: bool, name: str | None = None) -> dict[str, Any]:
        return self._request("POST", f"/v1/requests/{_q(id)}", {"accept": accept, "name": name})


# ------------------------------------------------------------------ events


async def watch_events(
    base_url: str, token: str, on_ready: Callable[[], None] | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Live events until the daemon goes away; ``ready``/``pong`` frames are swallowed.

    ``on_ready`` is called at the ``ready`` frame: the subscription is in place, so a
    client that loads its state then misses nothing (the TUI does, after reconnecting).
    """
    import aiohttp

    url = base_url.rstrip("/") + "/v1/events"
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as session:  # trust_env=False: no proxies
        try:
            ws = await session.ws_connect(url, headers=headers, heartbeat=30.0)
        except aiohttp.WSServerHandshakeError as exc:
            code = "unauthorized" if exc.status == 401 else f"http_{exc.status}"
            raise ApiClientError(exc.status, code, exc.message or "WebSocket refused") from None
        except aiohttp.ClientConnectorError as exc:
            if _refused(exc.os_error):
                raise DaemonNotRunning() from None
            raise ApiClientError(0, "unreachable", f"cannot reach the daemon: {exc}") from None
        async with ws:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    event = json.loads(msg.data)
                except ValueError:
                    continue
                if not isinstance(event, dict):
                    continue
                if event.get("type") == "ready":
                    if on_ready is not None:
                        on_ready()
                elif event.get("type") != "pong":
                    yield event
