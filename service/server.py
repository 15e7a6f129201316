"""Process entry points: the API server (optionally with the whole control plane embedded)
and the standalone controller. Everything is built here from one ``Settings``."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from service.settings import Settings, load_settings

log = logging.getLogger("gradpilot")


def configure_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@dataclass
class ControlPlane:
    """The controller, its executor and the agent graph, running in a background thread."""

    controller: Any
    executor: Any
    thread: threading.Thread
    stop: threading.Event


@contextlib.contextmanager
def control_plane(
    settings: Settings, sessions: sessionmaker[Session], artifacts: Any, executor: Any = None
) -> Iterator[ControlPlane]:
    """Start the controller loop in a thread; stop it (and the executor) on exit.

    The controller advances up to ``settings.controller_parallel_runs`` runs at once (its own
    pool). ``executor`` replaces the one the settings name (tests run a fake Batch)."""
    from service.advisors.registry import advisor_factory
    from service.agent.checkpointer import open_checkpointer
    from service.agent.deps import AgentDeps
    from service.agent.graph import build_graph
    from service.controller.reconcile import Controller
    from service.executors.registry import make_executor
    from service.sandbox import Sandbox, SandboxLimits

    executor = executor if executor is not None else make_executor(settings)
    # A spare sandbox process with torch imported already: a validation then takes well under
    # a second instead of the seconds that importing torch costs.
    sandbox = Sandbox(SandboxLimits.from_settings(settings), keep_warm=True)
    with sandbox, open_checkpointer(settings) as checkpointer:
        deps = AgentDeps(
            settings=settings,
            sessions=sessions,
            executor=executor,
            artifacts=artifacts,
            advisor_for=advisor_factory(settings),
            validate=sandbox.validate,
        )
        graph = build_graph(deps, checkpointer)
        controller = Controller(settings, sessions, executor, graph, artifacts=artifacts)
        stop = threading.Event()
        thread = threading.Thread(
            target=controller.run_forever, args=(stop,), name="controller", daemon=True
        )
        thread.start()
        try:
            yield ControlPlane(controller, executor, thread, stop)
        finally:
            stop.set()
            thread.join(timeout=30)
            executor.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def embedded_server(settings: Settings) -> Iterator[str]:
    """API + controller + local executor in this process, on ``settings.port``; yields the URL."""
    import uvicorn

    from service.api.app import build_state
    from service.app import create_app
    from service.db.migrate import upgrade

    settings.ensure_home()
    upgrade(settings.resolved_database_url)
    state = build_state(settings)
    app = create_app(settings, state=state)
    server = uvicorn.Server(
        uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"the API did not start on port {settings.port}")
        time.sleep(0.05)
    try:
        with control_plane(settings, state.sessions, state.artifacts):
            yield settings.resolved_public_url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        state.engine.dispose()


def serve(host: str | None = None, port: int | None = None, embedded: bool = False) -> None:
    """Migrate the database, then serve the API (and, embedded, the control plane)."""
    import uvicorn

    from service.api.app import build_state
    from service.app import create_app
    from service.db.migrate import upgrade

    configure_logging()
    overrides: dict[str, Any] = {}
    if host:
        overrides["host"] = host
    if port:
        overrides["port"] = port
    settings = load_settings(**overrides)
    settings.ensure_home()
    upgrade(settings.resolved_database_url)
    state = build_state(settings)
    app = create_app(settings, state=state)
    url = settings.resolved_public_url
    with contextlib.ExitStack() as stack:
        if embedded:
            stack.enter_context(control_plane(settings, state.sessions, state.artifacts))
            log.info(
                "embedded control plane: %s executor, advisor %s",
                settings.executor,
                settings.advisor,
            )
        if settings.token_file.exists() and not settings.api_tokens:
            log.info(
                "API token in %s (the CLI on this machine finds it by itself)", settings.token_file
            )
        log.info("gradpilot API on %s (docs %s/docs, dashboard %s/ui)", url, url, url)
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")


def run_controller() -> None:
    """The controller alone, against an already migrated database."""
    import signal

    from service.artifacts import open_store
    from service.db.session import make_engine, make_sessionmaker

    configure_logging()
    settings = load_settings()
    settings.ensure_home()
    engine = make_engine(settings.resolved_database_url)
    sessions = make_sessionmaker(engine)
    artifacts = open_store(
        settings.resolved_artifact_url,
        endpoint_url=settings.aws_endpoint_url,
        region=settings.aws_region,
    )
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    with control_plane(settings, sessions, artifacts):
        done.wait()
