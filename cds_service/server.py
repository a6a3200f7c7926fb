"""Run the app under gunicorn (the production WSGI server) from the ``spine-cds serve`` command."""
from __future__ import annotations

from gunicorn.app.base import BaseApplication


class _Gunicorn(BaseApplication):
    def __init__(self, options: dict):
        self.options = options
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        from . import create_app
        return create_app()


def run(host: str, port: int, workers: int) -> None:
    """Serve until interrupted; SIGTERM drains requests in flight (graceful shutdown).

    The app is built once here first so a configuration error stops the command with its
    message instead of leaving gunicorn restarting workers that cannot boot.
    """
    from . import close_app, create_app
    close_app(create_app())
    print(f"spine-cds: discovery at http://{host}:{port}/cds-services (Ctrl-C to stop)", flush=True)
    _Gunicorn({"bind": f"{host}:{port}", "workers": workers, "worker_class": "gthread", "threads": 4,
               "timeout": 30, "graceful_timeout": 20, "accesslog": None}).run()
