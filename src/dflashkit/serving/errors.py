"""OpenAI-shaped errors: every failure the server reports is one of these, never a framework default."""

from __future__ import annotations


class APIError(Exception):
    """An error answered as `{"error": {"message", "type", "param", "code"}}` with an HTTP status."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def __reduce__(self):  # pickled to and from the engine process: keep every field
        return (APIError, (self.status, self.message), {"type": self.type, "param": self.param, "code": self.code})

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def unsupported(param: str, what: str) -> APIError:
    return APIError(400, f"'{param}' is not supported by this server: {what}", param=param,
                    code="unsupported_parameter")


def context_exceeded(message: str, param: str) -> APIError:
    return APIError(400, message, param=param, code="context_length_exceeded")


def server_error(message: str) -> APIError:
    return APIError(500, message, type="server_error", code="internal_error")
