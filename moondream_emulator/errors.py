"""The emulator's one error type, and how it goes on the wire: nested for the cloud, flat for Station."""

from __future__ import annotations

from http import HTTPStatus

from starlette.responses import JSONResponse

_TYPES = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error"}


class ApiError(Exception):
    """A refusal the emulator reports to the caller instead of an answer."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code or _default_code(status)
        self.headers = headers or {}

    @property
    def type(self) -> str:
        if self.status >= 500:
            return "api_error"
        return _TYPES.get(self.status, "invalid_request_error")


def _default_code(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return f"http_{status}"


def error_response(error: ApiError, *, station: bool, keep_status: bool = False) -> JSONResponse:
    """The response for an error.

    Station reports what it finds wrong with a request as HTTP 200 with a flat {"error": message};
    `keep_status` is for refusals that are not about the request's content (rate limits, injected
    faults), which keep their status in either mode.
    """
    if station:
        return JSONResponse(
            {"error": error.message}, status_code=error.status if keep_status else 200, headers=error.headers
        )
    body = {"error": {"message": error.message, "type": error.type, "param": error.param, "code": error.code}}
    return JSONResponse(body, status_code=error.status, headers=error.headers)
