"""A server span for every HTTP request the app answers: Application Insights' requests table.

aiohttp's server has no instrumentation of its own in the Azure Monitor distro, so without this
the channel's 401s and 400s, the 503s of a draining instance and the admin's and Direct Line's
errors would be visible nowhere. A turn runs after its activity was acknowledged, in the context
the turn queue took when the request submitted it: its `chat.turn` span is a child of that
request (one operation in Application Insights, named after the request).

The span is named after the route template (`POST /v3/directline/conversations/{conversation}
/activities`), never the path (Direct Line paths carry conversation ids) or the query string
(stream URLs carry tokens), and the span carries no URL at all.
"""

from __future__ import annotations

from collections.abc import Collection

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

HTTP_METHOD = "http.request.method"
HTTP_ROUTE = "http.route"
HTTP_STATUS_CODE = "http.response.status_code"

# Methods named as they are; any other is `_OTHER`, as the HTTP semantic conventions say, so a
# client cannot fill the requests table with names of its own.
_KNOWN_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"}
)


def request_spans(*, untraced: Collection[str] = ()) -> Middleware:
    """The middleware; add it first (outermost), so the status it records is the one sent.
    Requests to the `untraced` route templates get no span: a liveness probe answers 200 as long
    as the process runs, and its rows would use up the sampling budget and the ingestion."""
    tracer = trace.get_tracer("enterprise_chat.http")
    skipped = frozenset(untraced)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = route_template(request)
        if route in skipped:
            return await handler(request)
        method = request.method if request.method in _KNOWN_METHODS else "_OTHER"
        attributes = {HTTP_METHOD: method}
        if route:
            attributes[HTTP_ROUTE] = route
        with tracer.start_as_current_span(
            f"{method} {route}" if route else method,
            kind=SpanKind.SERVER,
            attributes=attributes,
            # The handler's own log line says what went wrong; the span says that it did.
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                _answered(span, exc.status)
                raise
            except Exception:
                _answered(span, 500)  # what aiohttp answers for an unhandled exception
                raise
            _answered(span, response.status)
            return response

    return middleware


def route_template(request: web.Request) -> str:
    """The matched route's template (`/admin/api/conversations/{conversation_id}`, with a
    sub-app's prefix); "" when no route matched (404, 405)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else ""


def _answered(span: Span, status: int) -> None:
    span.set_attribute(HTTP_STATUS_CODE, status)
    if status >= 500:
        # A 4xx is the client's doing (semantic conventions for server spans): no error status.
        span.set_status(Status(StatusCode.ERROR, str(status)))
