"""The daemon's web pages, served on the CDP port beside /cdp/ (docs/api.md, Live views).

    GET /view/<cid>/<token>        the live view page of a view lease
    GET /view/<cid>/<token>/ws     its WebSocket (frames, tabs, and input in control mode)
    GET /assets/<name>             the pages' scripts and styles (no secret in them)
    GET /ui/<token>[/ws|/artifact/<run>/<id>]   the dashboard (dashboard.py)
    GET /replay/<run>/<token>[/data|/frame/<n>]  a run's replay (replay.py)

Every page and asset comes from the daemon (package data under web/static/: no CDN, it works
offline), with a strict Content-Security-Policy: scripts and styles only from this origin,
images only from it or as data: URLs, connections only back to it, no frames, no forms. The
Host header is checked before a request gets here (http_front.py); here a request with an
Origin is refused unless that origin is this page's own (`http://<Host>`), so another web
page can neither open a view's WebSocket nor read a page. The token in the path is checked
like a CDP lease's (hashed, constant time: `LeaseBook.admit`): 401 unknown, 410 ended.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import quote

import h11
import trio

from ..base.errors import ApiError
from ..base.model import Lease
from ..cdp.http_front import Refused, error_body, json_response
from ..cdp.peers import PeerLookup
from ..control.view import Views
from ..core.leases import LeaseBook
from ..core.registry import Registry
from ..core.runtime import Runtime
from ..store import storage
from ..system.fd_budget import Pool, Slot
from .dashboard import Dashboard, UiAccess
from .replay import ReplayAccess, Replays
from .wsock import PageSocket, accept

__all__ = ["CSP", "WebFront"]

log = logging.getLogger(__name__)

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_SECURITY_HEADERS = [
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),  # the token is in the page's path
    ("Cache-Control", "no-store"),
]
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml",
          ".json": "application/json; charset=utf-8"}
_VIEW = re.compile(r"/view/([A-Za-z0-9._~-]+)/([A-Za-z0-9._~-]+)(/ws)?/?")
_UI = re.compile(r"/ui/([A-Za-z0-9._~-]+)(/ws|/artifact/([A-Za-z0-9_-]+)/([A-Za-z0-9_-]+))?/?")
_REPLAY = re.compile(r"/replay/([A-Za-z0-9_-]+)/([A-Za-z0-9_-]+)(/data|/frame/([0-9]{1,9}))?/?")
_FILE_CHUNK = 256 * 1024
_ASSET = re.compile(r"/assets/([a-z0-9_-]+\.(?:js|css|svg))")
_WS_KEY = re.compile(rb"[A-Za-z0-9+/]{22}==")
# Closing a view's WebSocket because its lease ended: 4000 + the HTTP status a new request
# of it would get (410 Gone).
CLOSE_ENDED = 4410
LEASE_CHECK_S = 0.25  # how often an open view looks at its lease (expiry, revoke, run end)


def load_assets() -> dict[str, bytes]:
    """Every file of web/static/, by name (read once: they are small)."""
    folder = resources.files(__package__).joinpath("static")
    return {entry.name: entry.read_bytes() for entry in folder.iterdir() if entry.is_file()}


class WebFront:
    """Serves the web pages' requests that http_front hands over (anything outside /cdp/)."""

    def __init__(self, book: LeaseBook, views: Views, *, sockets: Pool,
                 peer_of: Callable[[trio.SocketStream], dict[str, Any]],
                 ui: UiAccess, dashboard: Dashboard, registry: Registry,
                 replay_access: ReplayAccess, replays: Replays) -> None:
        self._replay_access = replay_access
        self._replays = replays
        self._book = book
        self._views = views
        self._ui = ui
        self._dashboard = dashboard
        self._registry = registry
        self._sockets = sockets  # page WebSockets count among the endpoint's sockets
        self._quick_peer = peer_of
        self._peer = PeerLookup()
        self._assets = load_assets()

    async def handle(self, stream: trio.SocketStream, conn: h11.Connection,
                     request: h11.Request, pending: Slot | None) -> bool:
        """Answer one request; True if the connection may carry another one."""
        path = request.target.decode("ascii", "replace").partition("?")[0]
        headers = {k: v for k, v in request.headers}
        host = headers.get(b"host", b"").decode("ascii", "replace")
        origin = headers.get(b"origin")
        if origin is not None and origin.decode("latin-1") != f"http://{host}":
            return await self._refuse(stream, conn, 403, "requests from another origin are "
                                                         "refused")
        if request.method != b"GET":
            return await self._refuse(stream, conn, 405, "only GET is served here")
        if (asset := _ASSET.fullmatch(path)) is not None:
            body = self._assets.get(asset.group(1))
            if body is None:
                return await self._refuse(stream, conn, 404, "no such asset")
            suffix = asset.group(1)[asset.group(1).rfind("."):]
            return await self._send(stream, conn, 200, _TYPES[suffix], body)
        if (view := _VIEW.fullmatch(path)) is not None:
            cid, token, ws = view.groups()
            try:
                lease, rt = self._book.admit(cid, token, "view")
            except Refused as exc:
                self._book.refused(cid, exc.status, exc.reason, self._quick_peer(stream))
                return await self._refuse(stream, conn, exc.status, exc.reason, exc.code)
            if ws is None:
                return await self._send(stream, conn, 200, _TYPES[".html"],
                                        self._assets["view.html"])
            return await self._view_socket(stream, conn, headers, lease, rt, pending)
        if (replay := _REPLAY.fullmatch(path)) is not None:
            run_id, token, rest, frame = replay.groups()
            if not self._replay_access.check(run_id, token):
                return await self._refuse(stream, conn, 401, "bad replay token")
            try:
                if rest is None:
                    return await self._send(stream, conn, 200, _TYPES[".html"],
                                            self._assets["replay.html"])
                if rest == "/data":
                    body = json.dumps(await self._replays.data(run_id), default=str).encode()
                    return await self._send(stream, conn, 200, _TYPES[".json"], body)
                run = self._registry.get_run(run_id)
                jpeg = await self._replays.frame(run, int(frame))
                return await self._send(stream, conn, 200, "image/jpeg", jpeg)
            except ApiError as exc:
                return await self._refuse(stream, conn, 404, exc.message, exc.code)
        if (ui := _UI.fullmatch(path)) is not None:
            token, rest, run_id, artifact_id = ui.groups()
            if not self._ui.check(token):
                return await self._refuse(stream, conn, 401, "bad dashboard token")
            if rest is None:
                return await self._send(stream, conn, 200, _TYPES[".html"],
                                        self._assets["ui.html"])
            if rest == "/ws":
                return await self._socket(stream, conn, headers, pending, self._dashboard.serve)
            return await self._artifact(stream, conn, run_id, artifact_id)
        return await self._refuse(stream, conn, 404, "no such page")

    async def _socket(self, stream: trio.SocketStream, conn: h11.Connection,
                      headers: dict[bytes, bytes], pending: Slot | None,
                      serve: Callable[[PageSocket], Awaitable[None]]) -> bool:
        if not _is_upgrade(headers):
            return await self._refuse(stream, conn, 426, "this endpoint is a WebSocket")
        slot = self._sockets.take_nowait()
        if slot is None:
            return await self._refuse(stream, conn, 503, self._sockets.exhausted().message)
        if pending is not None:
            pending.release()  # from here on it counts among the sockets
        try:
            ws = await accept(stream, conn, headers)
            try:
                await serve(ws)
            except* (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the page went (perhaps grouped with a task of the page's nursery)
            await ws.close()
        finally:
            slot.release()
        return False

    async def _artifact(self, stream: trio.SocketStream, conn: h11.Connection, run_id: str,
                        artifact_id: str) -> bool:
        """An artifact's file as a download, streamed from disk."""
        try:
            run = self._registry.get_run(run_id)
            await self._registry.artifacts.load(run)
            record = self._registry.artifacts.get(run, artifact_id)
            path = self._registry.artifacts.path_of(run, record)
            size = (await trio.Path(path).stat()).st_size
            file = await trio.open_file(path, "rb")
        except (ApiError, OSError) as exc:
            return await self._refuse(stream, conn, 404, getattr(exc, "message", str(exc)))
        async with file:
            name = str(record.get("name") or artifact_id)
            headers = [("Content-Type", "application/octet-stream"),
                       ("Content-Length", str(size)),
                       ("Content-Disposition", f"attachment; filename*=UTF-8''{quote(name)}"),
                       *_SECURITY_HEADERS]
            try:
                await stream.send_all(conn.send(h11.Response(status_code=200,
                                                             headers=headers)))
                sent = 0
                while sent < size:
                    chunk = await file.read(min(_FILE_CHUNK, size - sent))
                    if not chunk:
                        return False  # it shrank under us: the length sent is a lie, close
                    sent += len(chunk)
                    await stream.send_all(conn.send(h11.Data(data=chunk)))
                await stream.send_all(conn.send(h11.EndOfMessage()))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return False
        return True

    async def _view_socket(self, stream: trio.SocketStream, conn: h11.Connection,
                           headers: dict[bytes, bytes], lease: Lease, rt: Runtime,
                           pending: Slot | None) -> bool:
        async def serve(ws: PageSocket) -> None:
            socket_id = storage.make_id("sock")
            self._book.view_attached(lease, socket_id, await self._peer(stream))
            stats: dict[str, Any] = {"ended_by": "viewer"}
            try:
                stats = await self._serve_view(ws, lease, rt)
            finally:
                self._book.view_detached(lease, socket_id, stats)

        return await self._socket(stream, conn, headers, pending, serve)

    async def _serve_view(self, ws: PageSocket, lease: Lease, rt: Runtime) -> dict[str, Any]:
        try:
            return await self._watch(ws, lease, rt)
        except ApiError as exc:  # the daemon has no link to the browser: it is going away
            await ws.send(json.dumps({"t": "end", "reason": "closed"}))
            await ws.close(CLOSE_ENDED, "closed")
            return {"ended_by": "run_end", "error": exc.code}

    async def _watch(self, ws: PageSocket, lease: Lease, rt: Runtime) -> dict[str, Any]:
        ended_by = "viewer"
        async with self._views.watch(rt, lease.control) as viewer, \
                trio.open_nursery() as nursery:

            async def read_input() -> None:
                while (text := await ws.receive()) is not None:
                    try:
                        message = json.loads(text)
                    except ValueError:
                        viewer.inputs_refused += 1
                        continue
                    if isinstance(message, dict):
                        await self._views.input(rt, viewer, message)
                nursery.cancel_scope.cancel()  # the page went

            nursery.start_soon(read_input)
            await ws.send(json.dumps({"t": "hello", "control": lease.control,
                                      "runtime": rt.record.name, "space": rt.record.space,
                                      "expires_at": lease.expires_at}))
            while True:
                status = self._book.view_status(lease)
                reason = viewer.ended or (None if status == "active" else status)
                if reason is not None:
                    ended_by = f"lease_{reason}" if viewer.ended is None else "run_end"
                    await ws.send(json.dumps({"t": "end", "reason": reason}))
                    await ws.close(CLOSE_ENDED, reason)
                    break
                for message in viewer.take():
                    await ws.send(message)
                await viewer.wait_news(LEASE_CHECK_S)
            nursery.cancel_scope.cancel()
        return {"ended_by": ended_by, **viewer.stats()}

    async def _send(self, stream: trio.SocketStream, conn: h11.Connection, status: int,
                    content_type: str, body: bytes) -> bool:
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body))),
                   *_SECURITY_HEADERS]
        try:
            await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers))
                                  + conn.send(h11.Data(data=body))
                                  + conn.send(h11.EndOfMessage()))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    async def _refuse(self, stream: trio.SocketStream, conn: h11.Connection, status: int,
                      message: str, code: str | None = None) -> bool:
        try:
            await stream.send_all(json_response(conn, status, error_body(status, code, message)))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        return False


def _is_upgrade(headers: dict[bytes, bytes]) -> bool:
    upgrade = headers.get(b"upgrade", b"").lower() == b"websocket" and b"upgrade" in [
        t.strip() for t in headers.get(b"connection", b"").lower().split(b",")]
    return (upgrade and headers.get(b"sec-websocket-version") == b"13"
            and _WS_KEY.fullmatch(headers.get(b"sec-websocket-key", b"")) is not None)
