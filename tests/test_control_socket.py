"""gunicorn's control socket stays closed under ``spine-cds serve``.

Why: gunicorn 25.1 added a Unix control socket (``$XDG_RUNTIME_DIR/gunicorn.ctl`` or
``~/.gunicorn/gunicorn.ctl``) through which ``gunicornc`` can resize, reload or stop the server;
it arrived unasked through an unpinned dependency.  Nothing here uses it, so it must not exist.
Checked on a real two-worker server whose HOME and XDG_RUNTIME_DIR are folders of this test.
"""
from __future__ import annotations

from served import served  # noqa: F401 (a fixture the test takes by name)


def test_serve_opens_no_gunicorn_control_socket(served, tmp_path):
    home, runtime = tmp_path / "home", tmp_path / "run"
    home.mkdir()
    runtime.mkdir(mode=0o700)
    server = served(workers=2, HOME=str(home), XDG_RUNTIME_DIR=str(runtime))
    server.booted(2)
    opened = [p for p in (*home.rglob("*"), *runtime.rglob("*")) if p.name.endswith(".ctl") or p.is_socket()]
    assert opened == [], f"gunicorn opened a control socket: {opened}"
    assert server.stop() == 0
