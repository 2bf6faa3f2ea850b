"""Run the service: uvicorn for one worker, gunicorn with uvicorn workers for more.

Each worker process builds its own app (`create_app`), so the bundle is verified
per process at startup and its Numba kernels compile in that process's background.
The settings reach the workers through the environment (`TREESURV_*`).

On SIGTERM (or SIGINT) the server stops accepting connections, lets the requests
in flight finish within `TREESURV_SHUTDOWN_GRACE` seconds, runs the app's shutdown
(which flushes the prediction log) and exits 0.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from treesurv.serving.settings import Settings

APP_FACTORY = "treesurv.serving.app:create_app"
WORKER_CLASS = "uvicorn_worker.UvicornWorker"  # uvicorn.workers is deprecated since 0.30
ServerKind = Literal["auto", "uvicorn", "gunicorn"]


def uvicorn_options(host: str, port: int, access_log: bool, log_level: str) -> dict[str, Any]:
    """The uvicorn settings of a one-worker service (the benchmark reuses them)."""
    return {
        "factory": True,
        "host": host,
        "port": port,
        "log_level": log_level,
        "access_log": access_log,
        "lifespan": "on",
        "loop": "auto",  # uvloop
        "http": "auto",  # httptools
    }


def gunicorn_options(host: str, port: int, workers: int, access_log: bool) -> dict[str, Any]:
    return {
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": WORKER_CLASS,
        "accesslog": "-" if access_log else None,
        "errorlog": "-",
        "timeout": 60,  # a worker must boot (verify + compile) within this
        "graceful_timeout": 20,
        "keepalive": 5,
        "control_socket_disable": True,  # no socket under $HOME (read-only images)
        "child_exit": _child_exit,
        # Workers get their own tmp heartbeat files: fine on a read-only root
        # filesystem with a writable /tmp.
        "worker_tmp_dir": tempfile.gettempdir(),
    }


def _child_exit(server: Any, worker: Any) -> None:
    # prometheus-client multiprocess mode: drop the gauges of a dead worker.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def run(
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    model_dir: Path | None = None,
    server: ServerKind = "auto",
    access_log: bool = False,
    log_level: str = "info",
) -> None:
    if model_dir is not None:
        os.environ["TREESURV_MODEL_DIR"] = str(model_dir)
    if server == "uvicorn" or (server == "auto" and workers == 1):
        if workers != 1:
            raise ValueError("uvicorn runs one worker here; use --server gunicorn for more")
        import uvicorn

        config = uvicorn.Config(
            APP_FACTORY,
            **uvicorn_options(host, port, access_log, log_level),
            timeout_graceful_shutdown=_grace(),
        )
        _server_class()(config).run()
        return
    options = gunicorn_options(host, port, workers, access_log)
    _run_gunicorn(options | {"loglevel": log_level, "graceful_timeout": _grace()})


def _grace() -> int:
    # uvicorn and gunicorn count the grace period in whole seconds.
    return max(1, round(Settings().shutdown_grace))


def _server_class() -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, except that a graceful stop on SIGTERM exits 0.

        uvicorn re-raises the signal after shutting down, so the process dies "by
        SIGTERM" (exit status 143) even though every request was answered and the
        app's shutdown ran; orchestrators and `treesurv serve`'s callers expect 0.
        """

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            handled = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server


def _run_gunicorn(options: dict[str, Any]) -> None:
    from gunicorn.app.base import BaseApplication

    own_dir = None
    if options["workers"] > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Several processes: metrics are aggregated through files (set before any
        # worker imports prometheus-client).
        own_dir = tempfile.mkdtemp(prefix="treesurv-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = own_dir

    class Application(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                if value is not None:
                    self.cfg.set(key, value)

        def load(self) -> Any:
            from treesurv.serving.app import create_app

            return create_app()

    try:
        Application().run()
    finally:
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)
