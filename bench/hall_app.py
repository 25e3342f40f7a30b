"""The app's own streaming overhead (issue 11 section 2): ``python -m bench.hall --app 8``.

N attendees send one prompt each at the same moment to one ``handoff serve``; then the same N prompts go
through the engine alone, in this process, in the same run. The attendees are Streamlit's own protocol
over a websocket each (``bench.streamlit_client``: the server does all it does for a browser, nothing is
drawn), or with ``--app-client chromium`` pages in headless Chromium (Debian's, one browser, a context
each), which then draws on the server's cores too. The live policy is ``never`` with no shadow calls and greedy decoding, so
each turn is one local generation that both panes show and no cloud is called: what separates the two
legs is the app (page scripts drawing both panes, Streamlit serialising and sending, the sessions'
threads beside the decoding loop in one process and one GIL), plus, with Chromium, its drawing on the same cores.

Printed: aggregate tokens/s of each leg and their ratio, CPU seconds per generated token of the server
(``handoff serve`` and its Streamlit process) against the engine alone's, the clients' CPU seconds, the
pane redraws the clients saw per generated token, and, as the clients saw them, the time from "send" to
the first text (the local answer streams in one pane) and to both panes complete (the handoff pane shows
the local answer once it is complete, since the policy keeps it local).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.common import Target, percentile, report
from playground.i18n import translate

CHROMIUM = "/usr/bin/chromium"  # Debian's (`make browser`): Playwright cannot download browsers here
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
EVENT_CODE = "HALL-APP"
CHAT = "Ask anything: both answers arrive side by side"
THINKING = translate("en", "pane.thinking")  # the live pane's text before its first token
CLIENTS = ("websocket", "chromium")
LEG_TIMEOUT_S = 900.0
# Runs in each page before its prompt is sent: for both live answer panes (A, B in document order), when
# the first text other than the "thinking" placeholder appeared and how often the text changed; and when
# the round's feedback form (the save button, ``key="save_feedback"``) appeared, i.e. the turn was over.
OBSERVER = """(thinking) => {
  const h = {sent: null, first: [null, null], redraws: [0, 0], last: ['', ''], done: null};
  window.__hall = h;
  const look = () => {
    if (h.sent === null || h.done !== null) return;
    if (document.querySelector('.st-key-save_feedback')) { h.done = Date.now(); return; }
    const panes = [...document.querySelectorAll('[data-testid="stChatMessage"]')]
      .filter((m) => m.querySelector('[data-testid="stChatMessageAvatarAssistant"]'));
    panes.slice(0, 2).forEach((m, i) => {
      const box = m.querySelector('[data-testid="stMarkdownContainer"]');
      const text = box ? box.textContent : '';
      if (text !== h.last[i]) {
        h.last[i] = text; h.redraws[i] += 1;
        if (h.first[i] === null && text && text !== thinking) h.first[i] = Date.now();
      }
    });
  };
  new MutationObserver(look).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


@dataclass
class Leg:
    tokens: int
    wall_s: float
    cpu_s: float  # the serving processes' CPU seconds (the engine alone: this process's)
    client_cpu_s: float = 0.0  # the attendees' side: Chromium's processes, or this process's websocket clients
    redraws: int = 0  # pane text changes the clients saw
    ttft: dict[str, list[float]] | None = None  # seconds from send: first text in a pane, both panes done

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s else 0.0

    @property
    def cpu_per_token_ms(self) -> float:
        return 1000 * self.cpu_s / self.tokens if self.tokens else float("nan")


def _cpu(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def _threads(processes: list[psutil.Process]) -> dict[tuple[int, int], tuple[str, float]]:
    """(pid, thread id) -> (thread name, CPU seconds), from /proc: which threads of the server take the CPU."""
    seen = {}
    for process in processes:
        for task in Path(f"/proc/{process.pid}/task").glob("*"):
            try:
                name = (task / "comm").read_text().strip()
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            seen[(process.pid, int(task.name))] = (name, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    return seen


def _by_thread_name(before: dict, after: dict) -> str:
    """The busiest threads (Python threads all show as their process's name: told apart by thread id)."""
    spent = {key: (name, cpu - before.get(key, (name, 0.0))[1]) for key, (name, cpu) in after.items()}
    top = sorted(spent.items(), key=lambda item: -item[1][1])[:10]
    rest = sum(cpu for _, (_, cpu) in sorted(spent.items(), key=lambda item: -item[1][1])[10:])
    busiest = ", ".join(f"{name}[{tid}] {cpu:.1f} s" for (_, tid), (name, cpu) in top if cpu >= 0.05)
    return f"{busiest}; {len(spent) - len(top)} more threads {rest:.1f} s"


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _serve(env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    handoff = str(Path(sys.executable).with_name("handoff"))
    with log.open("w") as out:
        process = subprocess.Popen(
            [handoff, "serve"], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 600
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"handoff serve did not start: {log.read_text()[-2000:]}") from None
            time.sleep(0.5)


def _stop(process: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=10)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


async def _join(browser, base: str):  # noqa: ANN001, ANN202 - playwright Browser / Page
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(LEG_TIMEOUT_S * 1000)
    page = await context.new_page()
    await page.goto(f"{base}/?event={EVENT_CODE}")
    await page.get_by_role("button", name="I agree, let's start").click()
    await page.get_by_placeholder(CHAT).wait_for()
    return page


async def _send(page, prompt: str) -> None:  # noqa: ANN001
    chat = page.get_by_placeholder(CHAT)
    await chat.fill(prompt)
    await page.evaluate("() => { window.__hall.sent = Date.now(); }")
    await chat.press("Enter")


async def _pages(base: str, prompts: list[str], serving: list[psutil.Process]) -> Leg:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            warm = await _join(browser, base)  # the first turn loads the model: not measured
            await warm.evaluate(OBSERVER, THINKING)
            await _send(warm, "Say hello.")
            await warm.locator(".st-key-save_feedback").wait_for()
            await warm.context.close()
            pages = [await _join(browser, base) for _ in prompts]
            for page in pages:
                await page.evaluate(OBSERVER, THINKING)
            browsers = [c for c in psutil.Process().children(recursive=True) if c.pid not in {s.pid for s in serving}]
            cpu0, browser0, threads0 = _cpu(serving), _cpu(browsers), _threads(serving)
            await asyncio.gather(*(_send(page, prompt) for page, prompt in zip(pages, prompts, strict=True)))
            deadline = time.monotonic() + LEG_TIMEOUT_S
            while True:  # one cheap look a second per page: Playwright's own waiting would poll in every page
                seen = [await page.evaluate("() => window.__hall") for page in pages]
                if all(h["done"] is not None for h in seen) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(1.0)
            cpu1, browser1 = _cpu(serving), _cpu(browsers)
            print(f"server CPU by thread: {_by_thread_name(threads0, _threads(serving))}", flush=True)
        finally:
            await browser.close()
    if any(h["done"] is None for h in seen):
        raise RuntimeError(f"{sum(h['done'] is None for h in seen)} of {len(seen)} turns did not finish")
    # The local answer streams in one pane; the handoff pane (random side) shows it once it is complete.
    times = [
        (h["sent"] / 1000, min((f for f in h["first"] if f is not None), default=h["done"]) / 1000, h["done"] / 1000)
        for h in seen
    ]
    return _timed(times, cpu1 - cpu0, browser1 - browser0, sum(sum(h["redraws"]) for h in seen))


async def _sockets(base: str, prompts: list[str], serving: list[psutil.Process]) -> Leg:
    """The same as ``_pages`` with Streamlit's protocol for a browser: each attendee consents, then all send."""
    from bench.streamlit_client import StreamlitPage

    async def join() -> StreamlitPage:
        page = await StreamlitPage.open(f"{base}/?event={EVENT_CODE}", placeholder=THINKING)
        await page.wait_for(lambda p: "consent_accept" in p.widgets, LEG_TIMEOUT_S)  # after the warm-up screen
        await page.click("consent_accept")
        await page.wait_for(lambda p: "prompt" in p.widgets and not p.widgets["prompt"].disabled, LEG_TIMEOUT_S)
        return page

    async def turn(page: StreamlitPage, prompt: str) -> tuple[float, float, float]:
        sent = time.time()
        await page.send("prompt", prompt)
        await page.wait_for(lambda p: "save_feedback" in p.widgets, LEG_TIMEOUT_S)  # the round's feedback form
        done = time.time()
        return sent, page.page.first_text_at or done, done

    warm = await join()  # the first turn loads the model: not measured
    await turn(warm, "Say hello.")
    await warm.close()
    pages = [await join() for _ in prompts]
    try:
        cpu0, client0, threads0 = _cpu(serving), time.process_time(), _threads(serving)
        times = await asyncio.gather(*(turn(page, prompt) for page, prompt in zip(pages, prompts, strict=True)))
        cpu1, client1 = _cpu(serving), time.process_time()
        print(f"server CPU by thread: {_by_thread_name(threads0, _threads(serving))}", flush=True)
    finally:
        for page in pages:
            await page.close()
    return _timed(times, cpu1 - cpu0, client1 - client0, sum(page.page.pane_changes for page in pages))


def _timed(times: list[tuple[float, float, float]], cpu_s: float, client_cpu_s: float, redraws: int) -> Leg:
    """The app leg from each turn's (sent, first pane text, both panes done), in seconds; tokens come later."""
    wall = max(done for _, _, done in times) - min(sent for sent, _, _ in times)
    ttft = {"first": [first - sent for sent, first, _ in times], "done": [done - sent for sent, _, done in times]}
    return Leg(0, wall, cpu_s, client_cpu_s, redraws, ttft)


def _stored_tokens(url: str) -> int:
    """Tokens of the measured turns: one generation per turn (the ``off`` arm; ``on`` shows the same draft)."""
    from sqlalchemy import select

    from db.models import Answer, Turn
    from db.session import session_scope

    with session_scope(url) as session:
        counts = session.scalars(
            select(Answer.tokens_out).join(Turn, Answer.turn_id == Turn.id).where(Answer.arm == "off").order_by(Turn.id)
        ).all()
    return int(sum(c or 0 for c in counts[1:]))  # the first turn is the warm-up


def app_leg(
    env: dict[str, str], url: str, prompts: list[str], engine_pids: tuple[int, ...] = (), client: str = "websocket"
) -> Leg:
    """The prompts through ``handoff serve`` from ``client`` attendees; its processes' CPU and the engine servers'
    (if any)."""
    port = int(env["HANDOFF_PORT"])
    with tempfile.TemporaryDirectory(prefix="hall-app-") as scratch:
        server = _serve({**os.environ, **env, "HANDOFF_DATA_DIR": scratch}, port, Path(scratch) / "serve.log")
        try:
            serving = _tree(server.pid) + [psutil.Process(pid) for pid in engine_pids]
            attendees = _pages if client == "chromium" else _sockets
            leg = asyncio.run(attendees(f"http://127.0.0.1:{port}", prompts, serving))
        finally:
            _stop(server)
    leg.tokens = _stored_tokens(url)
    return leg


def engine_leg(env: dict[str, str], prompts: list[str], engine_pids: tuple[int, ...] = ()) -> Leg:
    """The same prompts through the engine alone, in this process, all submitted at once; CPU: this process's
    and the engine servers' (if any), as in the app leg."""
    os.environ.update(env)
    from playground import settings as settings_module
    from playground.runtime import local_engine

    settings_module.get_settings.cache_clear()
    settings = settings_module.get_settings()
    engine = local_engine(settings)
    chats = [[{"role": "system", "content": settings.system_prompt}, {"role": "user", "content": p}] for p in prompts]
    engine.generate([{"role": "user", "content": "Say hello."}], max_new_tokens=8).wait()  # warm
    server = [psutil.Process(pid) for pid in engine_pids]
    cpu0, started, server0 = time.process_time(), time.perf_counter(), _cpu(server)
    generations = [engine.generate(messages) for messages in chats]
    readers = [threading.Thread(target=lambda g=g: [None for _ in g]) for g in generations]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu0 + _cpu(server) - server0
    return Leg(sum(g.wait().tokens_out for g in generations), wall, cpu)


def run(
    targets: list[Target],
    sessions: int,
    new_tokens: int,
    env: dict[str, str],
    url: str,
    engine: str = "in-process",
    engine_pids: tuple[int, ...] = (),
    client: str = "websocket",
) -> None:
    """Both legs in one run, on one engine (``engine_pids``: its servers, whose CPU counts in both legs); the lines
    are printed as soon as both exist."""
    from bench.prompts import questions
    from db.models import Event
    from db.session import session_scope

    if client == "chromium" and not Path(CHROMIUM).exists():
        raise RuntimeError("Debian's chromium is not installed: run `make browser`")
    with session_scope(url) as session:
        session.add(Event(code=EVENT_CODE, name="App bench", region="sf", city="San Francisco", timezone="UTC"))
    pool = questions()
    prompts = [pool[i % len(pool)] for i in range(sessions)]
    env = {
        **env,
        "HANDOFF_MAX_NEW_TOKENS": str(new_tokens),
        "HANDOFF_HANDOFF_POLICY": "never",
        "HANDOFF_SHADOW_RATE": "0",
        "HANDOFF_TEMPERATURE": "0",
        "HANDOFF_CLOUD_BASE_URL": "http://127.0.0.1:9/v1",  # never called: no stand-in is started
        "HANDOFF_HOST": "127.0.0.1",
    }
    app = app_leg(env, url, prompts, engine_pids, client)
    alone = engine_leg(env, prompts, engine_pids)
    name = f"hall app[{engine}, {client}] x{sessions}"
    ttft = app.ttft or {}
    print(
        f"{name}: through the app {app.tokens} tokens in {app.wall_s:.1f} s = {app.tokens_per_s:.1f} tok/s, "
        f"server CPU {app.cpu_s:.1f} s ({app.cpu_per_token_ms:.1f} ms/token), {client} CPU {app.client_cpu_s:.1f} s, "
        f"{app.redraws / max(app.tokens, 1):.2f} pane redraws/token, TTFT local pane p50/p95 "
        f"{percentile(ttft.get('first', []), 50):.2f}/{percentile(ttft.get('first', []), 95):.2f} s, both panes "
        f"done p50/p95 {percentile(ttft.get('done', []), 50):.2f}/{percentile(ttft.get('done', []), 95):.2f} s; "
        "engine alone "
        f"{alone.tokens} tokens in {alone.wall_s:.1f} s = {alone.tokens_per_s:.1f} tok/s, CPU {alone.cpu_s:.1f} s "
        f"({alone.cpu_per_token_ms:.1f} ms/token)",
        flush=True,
    )
    ratio = app.tokens_per_s / alone.tokens_per_s if alone.tokens_per_s else 0.0
    lines = [
        Target(f"{name}: tokens/s through the app / engine alone", ratio, 0.8),
        Target(
            f"{name}: server CPU per token - engine alone's",
            app.cpu_per_token_ms - alone.cpu_per_token_ms,
            5.0,
            " ms",
            higher_is_better=False,
        ),
    ]
    report(lines)
    targets += lines
