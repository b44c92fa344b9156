"""Running the two stand-ins: one event loop, two uvicorn servers, live ticks, webhook delivery.

:class:`StandinServers` starts them on 127.0.0.1 (free ports by default) either in a background
thread of the calling process (tests: cheap, and the world is inspectable) or in a child
process (benchmarks and the demo: the server gets its own interpreter and GIL, so it does not
compete with the client it measures). Both modes are controlled the same way, over HTTP
(``/_control/...``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Coroutine
from dataclasses import asdict, dataclass, field
from datetime import date
from types import TracebackType
from typing import Any

import uvicorn

from ledger_assets.lib.standins.live import Live, LiveRates
from ledger_assets.lib.standins.plaid_app import PlaidStandin
from ledger_assets.lib.standins.stripe_app import StripeStandin
from ledger_assets.lib.standins.webhooks import (
    Deliverer,
    DeliveryPolicy,
    PlaidSigningKey,
    stripe_signer,
)
from ledger_assets.lib.standins.world import Clock, PlaidWebhook, StripeEvent, World
from ledger_assets.lib.synth.spec import SeedSpec

#: Defaults of the credentials the stand-ins accept; real deployments use real ones.
DEFAULT_STRIPE_API_KEY = "sk_test_standin"
DEFAULT_STRIPE_WEBHOOK_SECRET = "whsec_standin"
DEFAULT_PLAID_CLIENT_ID = "standin-client-id"
DEFAULT_PLAID_SECRET = "standin-secret"
_READY_PREFIX = "STANDINS-READY "


@dataclass(frozen=True)
class StandinConfig:
    """Everything a stand-in pair needs.

    Attributes:
        spec: the history to serve (the same spec that ``seed_database`` would load).
        live: produce activity every ``interval_s`` seconds.
        interval_s: seconds between live ticks.
        host: the interface to bind.
        stripe_port: 0 for a free port.
        plaid_port: 0 for a free port.
        stripe_api_key: the key clients must send.
        stripe_webhook_secret: the endpoint secret webhooks are signed with.
        stripe_webhook_url: where Stripe events are POSTed (None: no webhooks).
        plaid_webhook_url: where Plaid webhooks are POSTed (None: no webhooks).
        plaid_client_id: the client id clients must send.
        plaid_secret: the secret clients must send.
        delivery: how imperfect webhook delivery is (default: the standard shares, seeded
            with the spec's seed).
        rates: live activity per tick.
    """

    spec: SeedSpec
    live: bool = False
    interval_s: float = 2.0
    host: str = "127.0.0.1"
    stripe_port: int = 0
    plaid_port: int = 0
    stripe_api_key: str = DEFAULT_STRIPE_API_KEY
    stripe_webhook_secret: str = DEFAULT_STRIPE_WEBHOOK_SECRET
    stripe_webhook_url: str | None = None
    plaid_webhook_url: str | None = None
    plaid_client_id: str = DEFAULT_PLAID_CLIENT_ID
    plaid_secret: str = DEFAULT_PLAID_SECRET
    delivery: DeliveryPolicy | None = None
    rates: LiveRates = field(default_factory=LiveRates)

    def to_json(self) -> str:
        """The config as JSON (for a child process)."""
        data = asdict(self)
        data["spec"]["start"] = self.spec.start.isoformat()
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> StandinConfig:
        data = json.loads(text)
        spec = data.pop("spec")
        spec["start"] = date.fromisoformat(spec["start"])
        rates = LiveRates(**data.pop("rates"))
        delivery = data.pop("delivery")
        return cls(
            spec=SeedSpec(**spec),
            rates=rates,
            delivery=None if delivery is None else DeliveryPolicy(**delivery),
            **data,
        )


class Runtime:
    """The world, both apps, live activity and delivery of one stand-in pair (one event loop).

    Args:
        config: what to run.
        clock: Unix time source (tests may pin it).
    """

    def __init__(self, config: StandinConfig, clock: Clock = time.time) -> None:
        self.config = config
        self.world = World.build(config.spec, clock)
        seed = config.spec.seed
        self.live = Live(self.world, seed, config.rates)
        self.deliverer = Deliverer(config.delivery or DeliveryPolicy(seed=seed))
        self.signing_key = PlaidSigningKey(seed)
        self.stripe = StripeStandin(self.world, config.stripe_api_key, self.tick)
        self.plaid = PlaidStandin(
            self.world,
            config.plaid_client_id,
            config.plaid_secret,
            self.signing_key,
            self.tick,
            config.plaid_webhook_url,
        )
        if config.stripe_webhook_url:
            sign = stripe_signer(config.stripe_webhook_secret)
            url = config.stripe_webhook_url

            def on_event(event: StripeEvent) -> None:
                self.deliverer.submit(url, event.body, sign)

            self.world.on_stripe_event.append(on_event)
        if config.plaid_webhook_url:
            plaid_url = config.plaid_webhook_url

            def on_webhook(hook: PlaidWebhook) -> None:
                self.deliverer.submit(plaid_url, hook.body, self.signing_key.headers)

            self.world.on_plaid_webhook.append(on_webhook)
        self._servers: list[uvicorn.Server] = []

    def tick(self, count: int = 1) -> None:
        """Run ``count`` live ticks now."""
        for _ in range(count):
            self.live.tick()

    async def serve(self, stripe_sock: socket.socket, plaid_sock: socket.socket) -> None:
        """Serve until :meth:`shutdown`."""
        for app in (self.stripe.app, self.plaid.app):
            # httptools/uvloop are picked up when installed (uvicorn[standard]); access logs
            # would cost more than rendering a page.
            cfg = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
            self._servers.append(uvicorn.Server(cfg))
        background = [asyncio.create_task(self.deliverer.run())]
        if self.config.live:
            background.append(asyncio.create_task(self._live_loop()))
        try:
            await asyncio.gather(
                self._servers[0].serve(sockets=[stripe_sock]),
                self._servers[1].serve(sockets=[plaid_sock]),
            )
        finally:
            for task in background:
                task.cancel()

    @property
    def started(self) -> bool:
        return len(self._servers) == 2 and all(s.started for s in self._servers)

    def shutdown(self) -> None:
        for server in self._servers:
            server.should_exit = True

    async def _live_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.interval_s)
            self.tick()


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket (port 0: a free one, known before the server starts)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit this. Without it a response written as headers + body stalls
    # for the client's delayed ACK (40 ms) under asyncio's default loop: 25 pages/s.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvicorn's preferred event loop (uvloop when installed)."""
    # The app is never loaded here; the config only resolves the loop choice ("auto").
    factory = uvicorn.Config(app="unused:app").get_loop_factory()
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main)


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{host}:{port}"


class StandinServers:
    """A running Stripe + Plaid stand-in pair.

    Use :meth:`start`; stop with :meth:`stop` or a ``with`` block.

    Attributes:
        stripe_url: base address for ``stripe.StripeClient(base_addresses={"api": ...})``.
        plaid_url: ``host`` for ``plaid.Configuration``.
        config: what runs.
        runtime: the in-process runtime (thread mode only; None for a child process).
    """

    def __init__(
        self,
        config: StandinConfig,
        stripe_url: str,
        plaid_url: str,
        runtime: Runtime | None = None,
        thread: threading.Thread | None = None,
        process: subprocess.Popen[str] | None = None,
    ) -> None:
        self.config = config
        self.stripe_url = stripe_url
        self.plaid_url = plaid_url
        self.runtime = runtime
        self._thread = thread
        self._process = process

    @classmethod
    def start(
        cls,
        spec: SeedSpec,
        *,
        live: bool = False,
        in_process: bool = True,
        clock: Clock | None = None,
        startup_timeout_s: float = 120.0,
        **options: Any,
    ) -> StandinServers:
        """Build the world and serve it.

        Args:
            spec: the history to serve.
            live: produce activity every ``interval_s`` seconds.
            in_process: serve from a background thread (True) or a child process (False).
            clock: Unix time source, thread mode only (tests pin it).
            startup_timeout_s: how long building and binding may take.
            **options: further :class:`StandinConfig` fields.

        Raises:
            RuntimeError: the servers did not come up in time.
        """
        config = StandinConfig(spec=spec, live=live, **options)
        if in_process:
            return cls._start_thread(config, clock or time.time, startup_timeout_s)
        if clock is not None:
            raise ValueError("a pinned clock is only possible with in_process=True")
        return cls._start_process(config, startup_timeout_s)

    @classmethod
    def _start_thread(cls, config: StandinConfig, clock: Clock, timeout: float) -> StandinServers:
        runtime = Runtime(config, clock)
        stripe_sock, plaid_sock = (
            bind(config.host, config.stripe_port),
            bind(config.host, config.plaid_port),
        )
        failure: list[BaseException] = []

        def run() -> None:
            try:
                run_loop(runtime.serve(stripe_sock, plaid_sock))
            except BaseException as exc:  # surfaced to the starting thread below
                failure.append(exc)

        thread = threading.Thread(target=run, name="standins", daemon=True)
        thread.start()
        deadline = time.monotonic() + timeout
        while not runtime.started:
            if failure or not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"stand-ins did not start: {failure or 'timeout'}")
            time.sleep(0.01)
        return cls(config, _url(stripe_sock), _url(plaid_sock), runtime, thread=thread)

    @classmethod
    def _start_process(cls, config: StandinConfig, timeout: float) -> StandinServers:
        process = subprocess.Popen(
            [sys.executable, "-m", "ledger_assets.lib.standins", "--config-json", config.to_json()],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            if line.startswith(_READY_PREFIX):
                urls = json.loads(line[len(_READY_PREFIX) :])
                return cls(config, urls["stripe_url"], urls["plaid_url"], process=process)
        process.kill()
        raise RuntimeError(f"stand-in process did not start (exit code {process.poll()})")

    # ------------------------------------------------------------------------------ control

    def _control(
        self, base: str, path: str, body: dict[str, Any] | None, method: str = "POST"
    ) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            base + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def tick(self, count: int = 1) -> None:
        """Run ``count`` live ticks now (works with or without ``live``)."""
        self._control(self.stripe_url, "/_control/tick", {"count": count})

    def stripe_fault(self, **rule: Any) -> None:
        """Arm a Stripe fault: ``stripe_fault(status=429, count=2, path_prefix="/v1/charges")``."""
        self._control(self.stripe_url, "/_control/faults", rule)

    def plaid_fault(self, **rule: Any) -> None:
        """Arm a Plaid fault: ``plaid_fault(status=500)`` or ``plaid_fault(mutation_page=2)``."""
        if "mutation_page" in rule:
            rule = {
                "error_code": "TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION",
                "page": rule.pop("mutation_page"),
                **rule,
            }
        self._control(self.plaid_url, "/_control/faults", rule)

    def clear_faults(self) -> None:
        self._control(self.stripe_url, "/_control/faults", None, "DELETE")
        self._control(self.plaid_url, "/_control/faults", None, "DELETE")

    def plaid_items(self) -> list[dict[str, Any]]:
        """Items with tenant, access token and account ids (what Plaid Link would give)."""
        items: list[dict[str, Any]] = self._control(self.plaid_url, "/_control/items", None, "GET")[
            "items"
        ]
        return items

    @property
    def pid(self) -> int:
        """The serving process (this one in thread mode)."""
        return os.getpid() if self._process is None else self._process.pid

    def stop(self) -> None:
        """Stop serving (and wait for the thread or child process to end)."""
        if self.runtime is not None and self._thread is not None:
            self.runtime.shutdown()
            self._thread.join(timeout=10)
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def __enter__(self) -> StandinServers:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve_forever(config: StandinConfig) -> None:
    """Run a stand-in pair in this process until interrupted; prints the ready line first."""
    runtime = Runtime(config)
    stripe_sock, plaid_sock = (
        bind(config.host, config.stripe_port),
        bind(config.host, config.plaid_port),
    )
    urls = {"stripe_url": _url(stripe_sock), "plaid_url": _url(plaid_sock)}

    async def main() -> None:
        task = asyncio.create_task(runtime.serve(stripe_sock, plaid_sock))
        while not runtime.started and not task.done():
            await asyncio.sleep(0.01)
        print(_READY_PREFIX + json.dumps(urls), flush=True)
        await task

    with contextlib.suppress(KeyboardInterrupt):
        run_loop(main())
