"""WEBCHAT_TRUSTED_ORIGINS as people write them (a trailing slash, capitals) still matches the
Origin header browsers send: the built-in Direct Line answers their CORS preflight, and the page
may be framed by them."""

from __future__ import annotations

from tests.conftest import AppFactory


async def test_an_origin_written_with_capitals_and_a_slash_gets_cors_and_may_frame_the_page(
    make_app: AppFactory,
) -> None:
    client = await make_app(
        WEBCHAT_TRUSTED_ORIGINS="HTTPS://Intranet.Contoso.com/, https://portal.contoso.com:443"
    )
    for origin in ("https://intranet.contoso.com", "https://portal.contoso.com"):
        preflight = await client.options(
            "/v3/directline/conversations",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status == 204
        assert preflight.headers.get("Access-Control-Allow-Origin") == origin
    page = await client.get("/")
    assert (
        "frame-ancestors 'self' https://intranet.contoso.com https://portal.contoso.com"
        in page.headers["Content-Security-Policy"]
    )
