"""The public tracking endpoints: the open pixel (always a GIF, so a bad token never shows a
broken image) and the click redirect (307 to the stored URL; an unknown or forged token is a 404
in the envelope, never a redirect anywhere)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from server.errors import NotFound
from server.mail.tracking import PIXEL_GIF, TokenError, read_token
from server.mail.tracking_store import TrackingStore
from server.services import services

__all__ = ["tracking_routes"]

_NO_STORE = {"Cache-Control": "no-store, private", "X-Content-Type-Options": "nosniff"}


def _client(request: Request) -> tuple[str, str | None]:
    agent = request.headers.get("user-agent", "")[:512]
    return agent, request.client.host if request.client else None


async def pixel(request: Request) -> Response:
    """Record an open, answer the transparent GIF."""
    svc = services(request)
    token = str(request.path_params["token"]).removesuffix(".gif")
    try:
        email_id, _ = read_token(svc.keyed.tracking_key, token, "o")
    except TokenError:
        email_id = None
    if email_id is not None:
        agent, address = _client(request)
        await TrackingStore(svc.db.engine).opened(email_id, agent, address)
    return Response(PIXEL_GIF, media_type="image/gif", headers=_NO_STORE)


async def click(request: Request) -> Response:
    """Record a click, redirect (307) to the link's stored URL."""
    svc = services(request)
    token = str(request.path_params["token"])
    try:
        email_id, index = read_token(svc.keyed.tracking_key, token, "c")
    except TokenError:
        raise NotFound("link_not_found", "No such tracked link.") from None
    agent, _ = _client(request)
    found = await TrackingStore(svc.db.engine).clicked(email_id, index, agent, request.method)
    if found is None:
        raise NotFound("link_not_found", "No such tracked link.")
    return RedirectResponse(found[0], status_code=307, headers=_NO_STORE)


def tracking_routes() -> list[BaseRoute]:
    """``GET /t/o/{token}.gif`` and ``GET|HEAD /t/c/{token}``."""
    return [
        Route("/t/o/{token}", pixel, methods=["GET"], name="tracking_open"),
        Route("/t/c/{token}", click, methods=["GET", "HEAD"], name="tracking_click"),
    ]
