"""Web app benchmarks (issue 12): the page in headless Debian chromium (Playwright)
against one real ``btchat up`` on loopback.

- First paint and time to interactive: fresh browser contexts load the signed-in page;
  paint timing from the Performance API, "interactive" is the app's own
  ``btchat-interactive`` mark (the conversation list drawn and the event WebSocket
  ready).
- 100,000 messages: written straight into the daemon's message database while it is
  stopped (one transaction, rows as the daemon stores them: the fastest honest way; the
  API would send each one), then the page opens the conversation and scrolls from the
  newest to the oldest, a page of history at a time, sampling
  ``performance.memory.usedJSHeapSize`` (``--enable-precise-memory-info``), the DOM's
  node count and the renderer's RSS.
- The event stream: messages sent through the REST API at 1,000/s (to a contact who is
  away, so each becomes one ``message`` event) while the page shows that conversation;
  events the page's socket received per second against sends per second.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.messenger import _env
from btchat.api.client import ApiClient, read_api_files

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--enable-precise-memory-info",
]
BTCHAT = [sys.executable, "-m", "btchat.cli"]
UP_ARGS = ["--host", "127.0.0.1", "--dht-port", "0", "--json"]
MESSAGES = 100_000
RATE = 1000  # messages per second into the event stream
TARGET_TTI_S = 1.0
TARGET_MB = 100

INTERACTIVE = "() => performance.getEntriesByName('btchat-interactive').length > 0"

#: Counts every frame the page's WebSocket receives, before the app handles it, and
#: keeps the sockets reachable, so a script in the page can hand them frames.
COUNT_EVENTS = """(() => {
  const Orig = window.WebSocket;
  window.__events = [];
  window.__sockets = [];
  window.WebSocket = class extends Orig {
    constructor(...args) {
      super(...args);
      window.__sockets.push(this);
      this.addEventListener('message', (e) => {
        if (e.data.includes('"message"')) window.__events.push(performance.now());
      });
    }
  };
})();"""

#: When each row of a replayed message is drawn.
WATCH_ROWS = """() => {
  window.__drawn = [];
  new MutationObserver((muts) => {
    const now = performance.now();
    for (const m of muts) for (const n of m.addedNodes) {
      if (n.nodeType === 1 && n.textContent.startsWith('replayed ')) window.__drawn.push(now);
    }
  }).observe(document.querySelector('.history'), {childList: true});
}"""

#: Scroll the history to its top again and again until the oldest message is shown,
#: sampling memory and nodes every `every` pages.
SCROLL = """async ({oldest, every, budgetMs}) => {
  const log = document.querySelector('.history');
  const t0 = performance.now();
  const samples = [];
  const sample = () => samples.push({
    ms: performance.now() - t0,
    heap: performance.memory.usedJSHeapSize,
    nodes: document.getElementsByTagName('*').length,
    rows: log.querySelectorAll('li').length,
  });
  sample();
  let pages = 0;
  const first = () => log.querySelector('li[data-lamport]');
  while (performance.now() - t0 < budgetMs) {
    const before = first() && first().dataset.lamport;
    if (before === String(oldest)) break;
    log.scrollTop = 0;
    log.dispatchEvent(new Event('scroll'));
    const t = performance.now();
    while ((first() && first().dataset.lamport) === before && performance.now() - t < 5000) {
      await new Promise((r) => setTimeout(r, 5));
    }
    if ((first() && first().dataset.lamport) === before) break; // nothing more came
    pages += 1;
    if (pages % every === 0) sample();
  }
  sample();
  return {samples, pages, reached: first() ? Number(first().dataset.lamport) : null,
          ms: performance.now() - t0};
}"""


def _cli(env: dict[str, str], data: Path, *args: str) -> Any:
    out = subprocess.run(
        [*BTCHAT, *args, "--data-dir", str(data), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.splitlines()[-1]) if out.stdout.strip() else None


def _up(env: dict[str, str], data: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [*BTCHAT, "up", "--data-dir", str(data), "--bootstrap", "127.0.0.1:9", *UP_ARGS],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    if not proc.stdout.readline():
        raise RuntimeError("btchat up ended before it was up")
    return proc


def _down(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _fill_history(data: Path, me: bytes, peer: bytes, n: int) -> float:
    """``n`` messages with ``peer``, both ways, all read, written in one transaction."""
    from btchat.identity.keystore import KeyStore
    from btchat.node.history import DB_FILE
    from btchat.storage.database import Database

    keys = KeyStore(data).load(None)
    t = time.perf_counter()
    db = Database.open(data / DB_FILE, keys.db_key)
    now = int(time.time() * 1000) - n * 1000
    words = "the quick brown fox jumps over the lazy dog"
    rows = []
    for i in range(n):
        out = i % 2 == 0
        rows.append(
            (
                secrets.token_bytes(16),
                peer,
                me if out else peer,
                "out" if out else "in",
                now + i * 1000,
                i + 1,
                "text",
                f"message {i}: {words[: 10 + i % 30]}",
                "read",
                now + i * 1000,
            )
        )
    with db.transaction() as conn:
        conn.executemany(
            "INSERT INTO messages (id, peer, sender, direction, ts_ms, lamport, type, text,"
            " state, received_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    db.close()
    return time.perf_counter() - t


def _renderer_rss() -> int:
    """The largest RSS among the browser's renderer processes (one page is open)."""
    best = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"--type=renderer" not in cmd or b"chromium" not in cmd:
                continue
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    best = max(best, int(line.split()[1]) * 1024)
        except OSError:
            continue
    return best


async def _pump(api_url: str, token: str, peer: str, rate: int, seconds: float) -> dict[str, Any]:
    """POST messages at ``rate`` per second for ``seconds``; the sends' times."""
    import aiohttp

    total = int(rate * seconds)
    sent: list[float] = []
    failed = 0
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{api_url.rstrip('/')}/v1/contacts/{peer}/messages"
    sem = asyncio.Semaphore(64)
    async with aiohttp.ClientSession(headers=headers) as http:

        async def one(i: int) -> None:
            nonlocal failed
            async with sem, http.post(url, json={"text": f"burst {i}"}) as resp:
                await resp.read()
                if resp.status >= 300:
                    failed += 1
                else:
                    sent.append(time.monotonic())

        t0 = time.monotonic()
        tasks = []
        for i in range(total):
            due = t0 + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        wall = time.monotonic() - t0
    return {"asked": total, "sent": len(sent), "failed": failed, "wall_s": wall}


def run(quick: bool = False) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    from btchat.cli.webopen import signed_in_url

    n = 20_000 if quick else MESSAGES
    root = Path(tempfile.mkdtemp(prefix="btchat-bench-web-"))
    env = _env(root)
    alice, bob = root / "alice", root / "bob"
    result: dict[str, Any] = {"messages": n, "rate_asked": RATE}
    proc = None
    try:
        _cli(env, alice, "init", "--no-passphrase")
        bob_id = _cli(env, bob, "init", "--no-passphrase")["id"]
        proc = _up(env, alice)
        client = ApiClient(*read_api_files(alice))
        me = bytes.fromhex(client.identity()["public_key"])
        peer_hex = client.add_contact(bob_id, "bob")["public_key"]
        _down(proc)
        result["fill_s"] = _fill_history(alice, me, bytes.fromhex(peer_hex), n)
        proc = _up(env, alice)
        api_url, token = read_api_files(alice)
        url = signed_in_url(api_url, token)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            result["load"] = _loads(browser, url, 1 if quick else 7)
            result["scroll"] = _scroll(browser, url, api_url, peer_hex)
            result["events"] = _events(browser, url, api_url, token, peer_hex, quick)
            result["injected"] = _events_injected(browser, url, api_url, peer_hex, quick)
            browser.close()
    finally:
        if proc is not None:
            _down(proc)
        shutil.rmtree(root, ignore_errors=True)
    return result


def _loads(browser: Any, url: str, runs: int) -> dict[str, Any]:
    fcp, tti = [], []
    for _ in range(runs):
        ctx = browser.new_context(viewport={"width": 1100, "height": 720})
        page = ctx.new_page()
        page.goto(url)
        page.wait_for_function(INTERACTIVE)
        got = page.evaluate(
            """() => ({
              fcp: (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime,
              tti: performance.getEntriesByName('btchat-interactive')[0].startTime,
            })"""
        )
        fcp.append(got["fcp"] / 1000)
        tti.append(got["tti"] / 1000)
        ctx.close()
    return {
        "runs": runs,
        "fcp_median_s": statistics.median(fcp),
        "tti_median_s": statistics.median(tti),
        "tti_max_s": max(tti),
        "tti_first_s": tti[0],
    }


def _scroll(browser: Any, url: str, api_url: str, peer: str) -> dict[str, Any]:
    ctx = browser.new_context(viewport={"width": 1100, "height": 720})
    page = ctx.new_page()
    page.set_default_timeout(120_000)
    page.goto(url)
    page.wait_for_function(INTERACTIVE)
    page.goto(api_url.rstrip("/") + f"/#/chat/{peer}")
    page.wait_for_selector(".history li[data-lamport]")
    cdp = ctx.new_cdp_session(page)
    cdp.send("HeapProfiler.enable")
    cdp.send("HeapProfiler.collectGarbage")
    start_heap = page.evaluate("performance.memory.usedJSHeapSize")
    start_rss = _renderer_rss()
    got = page.evaluate(SCROLL, {"oldest": 1, "every": 50, "budgetMs": 900_000})
    peak_rss = _renderer_rss()
    cdp.send("HeapProfiler.collectGarbage")
    end_heap = page.evaluate("performance.memory.usedJSHeapSize")
    end_nodes = page.evaluate("document.getElementsByTagName('*').length")
    ctx.close()
    samples = got["samples"]
    return {
        "pages": got["pages"],
        "reached_oldest": got["reached"] == 1,
        "seconds": got["ms"] / 1000,
        "start_heap_mb": start_heap / 1e6,
        "peak_heap_mb": max(s["heap"] for s in samples) / 1e6,
        "end_heap_after_gc_mb": end_heap / 1e6,
        "start_rss_mb": start_rss / 1e6,
        "end_rss_mb": peak_rss / 1e6,
        "peak_nodes": max(s["nodes"] for s in samples),
        "end_nodes": end_nodes,
        "peak_rows": max(s["rows"] for s in samples),
        "samples": samples[:: max(1, len(samples) // 20)],
    }


def _events(
    browser: Any, url: str, api_url: str, token: str, peer: str, quick: bool
) -> dict[str, Any]:
    seconds = 3.0 if quick else 10.0
    ctx = browser.new_context(viewport={"width": 1100, "height": 720})
    ctx.add_init_script(COUNT_EVENTS)
    page = ctx.new_page()
    page.goto(url)
    page.wait_for_function(INTERACTIVE)
    page.goto(api_url.rstrip("/") + f"/#/chat/{peer}")
    page.wait_for_selector(".history li[data-lamport]")
    page.evaluate("window.__events.length = 0")
    t0 = page.evaluate("performance.now()")
    # In a thread of its own: Playwright's sync API holds this thread's event loop.
    with ThreadPoolExecutor(1) as pool:
        sent = pool.submit(asyncio.run, _pump(api_url, token, peer, RATE, seconds)).result()
    # Let what is still in flight arrive (at most 10 s more).
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if page.evaluate("window.__events.length") >= sent["sent"]:
            break
        time.sleep(0.2)
    times = page.evaluate("window.__events")
    rows = page.evaluate("document.querySelectorAll('.history li').length")
    ctx.close()
    got = len(times)
    span = (times[-1] - t0) / 1000 if times else 0.0
    return {
        **sent,
        "send_rate": sent["sent"] / sent["wall_s"],
        "received": got,
        "receive_rate": got / span if span else 0.0,
        "receive_span_s": span,
        "rows_in_view": rows,
    }


#: The frame source inside the page: `message` frames dispatched on the app's own socket
#: at `rate` per second (those due are sent on each tick, so a slow tick catches up),
#: with nothing between the source and the app's handler (no Playwright relay).
SOURCE = """async ({total, rate, peer, nowMs}) => {
  const ws = window.__sockets[window.__sockets.length - 1];
  const t0 = performance.now();
  let i = 0;
  while (i < total) {
    const due = Math.min(total, Math.floor((performance.now() - t0) * rate / 1000) + 1);
    for (; i < due; i++) {
      const message = {id: i.toString(16).padStart(32, '0'), peer, sender: peer,
        direction: 'in', ts: nowMs + i, lamport: 10000000 + i, type: 'text',
        text: 'replayed ' + i, state: 'delivered'};
      const data = JSON.stringify({type: 'message', message});
      ws.dispatchEvent(new MessageEvent('message', {data}));
    }
    await new Promise((r) => setTimeout(r, 1));
  }
  return {t0, wallMs: performance.now() - t0};
}"""


def _events_injected(
    browser: Any, url: str, api_url: str, peer: str, quick: bool
) -> dict[str, Any]:
    """The page alone: ``message`` frames dispatched on its own event socket by a script
    in the page at RATE per second (a measure without Playwright's WebSocket relay,
    which was most of the shortfall measured through it)."""
    seconds = 3.0 if quick else 10.0
    total = int(RATE * seconds)
    ctx = browser.new_context(viewport={"width": 1100, "height": 720})
    ctx.add_init_script(COUNT_EVENTS)
    page = ctx.new_page()
    page.set_default_timeout(120_000)
    page.goto(url)
    page.wait_for_function(INTERACTIVE)
    page.goto(api_url.rstrip("/") + f"/#/chat/{peer}")
    page.wait_for_selector(".history li[data-lamport]")
    page.evaluate(WATCH_ROWS)
    now_ms = int(time.time() * 1000)
    sent = page.evaluate(SOURCE, {"total": total, "rate": RATE, "peer": peer, "nowMs": now_ms})
    page.wait_for_selector(f".history .msg .text >> text=replayed {total - 1}")
    times = page.evaluate("window.__drawn")
    ctx.close()
    wall = sent["wallMs"] / 1000
    span = (times[-1] - times[0]) / 1000 if len(times) > 1 else 0.0
    return {
        "asked": total,
        "send_rate": total / wall,
        "received": len(times),
        "receive_rate": len(times) / span if span else 0.0,
        "last_drawn_after_s": (times[-1] - sent["t0"]) / 1000 - wall if times else 0.0,
    }


def render(results: dict[str, Any]) -> list[str]:
    r = results.get("web")
    if not r:
        return []
    title = "## The web app in a browser"
    if "error" in r:
        return [title, "", r["error"], ""]
    ld, sc, ev = r["load"], r["scroll"], r["events"]
    tti_ok = ld["tti_median_s"] < TARGET_TTI_S
    inj = r.get("injected") or {}
    heap_ok = sc["peak_heap_mb"] < TARGET_MB
    rss_ok = sc["end_rss_mb"] < TARGET_MB
    # Kept up: every event arrived and was handled at (nearly) the rate it was sent, and
    # the sender really sent RATE per second.
    page_ok = bool(inj) and inj["received"] >= inj["asked"] and inj["send_rate"] >= 0.95 * RATE
    page_ok = page_ok and inj["receive_rate"] >= 0.95 * inj["send_rate"]
    end_ok = ev["received"] >= ev["sent"] and ev["send_rate"] >= 0.95 * RATE
    verdict = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    out = [
        f"{title} (issue 12 targets: interactive < 1 s: {verdict(tti_ok)}; "
        f"{r['messages']:,} messages scrolled with the JS heap under {TARGET_MB} MB: "
        f"{verdict(heap_ok)}, renderer RSS under {TARGET_MB} MB: {verdict(rss_ok)}; "
        f"the page keeps up with {r['rate_asked']:,} events/s: {verdict(page_ok)}; "
        f"daemon to page at {r['rate_asked']:,} messages/s: {verdict(end_ok)})",
        "",
        "Headless Debian chromium driven by Playwright (`bench/web.py`), one `btchat up` on "
        "loopback, both on this machine's cores. Interactive = the app's "
        "`btchat-interactive` mark: the conversation list drawn and the event WebSocket "
        "ready, from navigation start.",
        "",
        "| loads | first contentful paint (median) | interactive (median) | interactive "
        "(first load) | interactive (worst) |",
        "|---|---|---|---|---|",
        f"| {ld['runs']} | {ld['fcp_median_s'] * 1000:.0f} ms | "
        f"{ld['tti_median_s'] * 1000:.0f} ms | {ld['tti_first_s'] * 1000:.0f} ms | "
        f"{ld['tti_max_s'] * 1000:.0f} ms |",
        "",
        f"{r['messages']:,} messages written straight into the daemon's database "
        f"({r['fill_s']:.1f} s, one transaction), then scrolled from the newest to the "
        f"oldest a history page at a time ({sc['pages']:,} pages in {sc['seconds']:.0f} s; "
        f"oldest reached: {'yes' if sc['reached_oldest'] else 'NO'}).",
        "",
        "| JS heap at start | JS heap peak | JS heap at the end (after GC) | renderer RSS "
        "start / end | DOM nodes peak / end | history rows in the DOM (peak) |",
        "|---|---|---|---|---|---|",
        f"| {sc['start_heap_mb']:.1f} MB | {sc['peak_heap_mb']:.1f} MB | "
        f"{sc['end_heap_after_gc_mb']:.1f} MB | {sc['start_rss_mb']:.0f} / "
        f"{sc['end_rss_mb']:.0f} MB | {sc['peak_nodes']:,} / {sc['end_nodes']:,} | "
        f"{sc['peak_rows']:,} |",
        "",
        f"The event stream: {ev['asked']:,} messages POSTed at {r['rate_asked']:,}/s "
        f"(64 in flight, aiohttp) to a contact who is away; {ev['sent']:,} accepted at "
        f"{ev['send_rate']:.0f}/s ({ev['failed']} failed). The page, showing that "
        f"conversation, received {ev['received']:,} `message` events at "
        f"{ev['receive_rate']:.0f}/s over {ev['receive_span_s']:.1f} s and kept "
        f"{ev['rows_in_view']:,} rows in the page (the history's window).",
        "",
    ]
    if inj:
        out += [
            f"The page alone: {inj['asked']:,} `message` events dispatched on its own event "
            f"socket by a script in the page (no relay) at {inj['send_rate']:.0f}/s while it "
            "shows that "
            f"conversation; it drew {inj['received']:,} of their rows at "
            f"{inj['receive_rate']:.0f}/s (first to last), the last "
            f"{inj['last_drawn_after_s'] * 1000:.0f} ms after it was sent.",
            "",
        ]
    return out
