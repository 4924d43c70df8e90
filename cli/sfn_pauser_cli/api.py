"""The REST API over HTTP(S), every request signed with SigV4 for ``execute-api``.

The routes are deployed with API Gateway's IAM authorizer, so a request is
signed with whatever botocore's standard credential chain finds: environment
variables (what aws-actions/configure-aws-credentials sets), a profile, SSO,
or a container or instance role. The signature covers the method, the path,
the query, the body and the ``host``, ``content-type`` and ``x-amz-*`` headers.
"""

import json
import os
import platform
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPException
from typing import Any

import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from sfn_pauser_cli import __version__

SERVICE = "execute-api"
# API Gateway ends an integration at 29 s and the API's own budget is about that;
# a request that has had no answer after this long will not get one.
REQUEST_TIMEOUT_SECONDS = 35.0
# Answers worth another try: throttling, and API Gateway's own 5xx (the function
# did not answer). A 500 is the function's own error and will not go away.
_RETRY_STATUSES = frozenset({429, 502, 503, 504})
_RETRY_DELAYS = (0.5, 1.5)
_EXECUTE_API_HOST = re.compile(
    r"\.execute-api\.(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+)\.(?:vpce\.)?amazonaws\.com(?:\.cn)?$"
)


class ApiError(Exception):
    """The API answered with an error status; ``code`` and ``message`` are from its body."""

    def __init__(self, status: int, code: str, message: str, body: Any) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.body = body


class Unreachable(Exception):
    """No answer: refused, unknown host, TLS failure, or no response in time."""


class ConfigurationError(Exception):
    """Nothing can be sent: no credentials, no region, or a malformed API URL."""


def region_of_host(host: str) -> str | None:
    """The region in an API Gateway hostname; None for a custom domain.

    >>> region_of_host("abc123.execute-api.eu-west-1.amazonaws.com")
    'eu-west-1'
    >>> region_of_host("abc-vpce-1a2b.execute-api.us-gov-west-1.vpce.amazonaws.com")
    'us-gov-west-1'
    >>> region_of_host("pauser.example.com") is None
    True
    """
    match = _EXECUTE_API_HOST.search(host.lower())
    return match["region"] if match else None


def is_local(api_url: str) -> bool:
    """Whether the API is on this machine (``python3 dev.py local``'s chalice local, say).

    >>> is_local("http://127.0.0.1:8000"), is_local("http://localhost:8000/api")
    (True, True)
    >>> is_local("https://abc123.execute-api.eu-west-1.amazonaws.com/api")
    False
    """
    host = (urllib.parse.urlsplit(api_url).hostname or "").lower()
    return host in ("localhost", "::1") or host.endswith(".localhost") or host.startswith("127.")


# A local API (chalice local) checks no signature, but the CLI signs every request all the same.
_LOCAL_HINT = (
    "a local API checks no signature, so any values will do, e.g. AWS_ACCESS_KEY_ID=testing "
    "AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1 (`python3 dev.py local` prints them)"
)


def resolve_region(explicit: str | None, api_url: str, session: botocore.session.Session) -> str:
    """``--region``, else the region in an ``execute-api`` hostname, else the environment.

    The hostname comes before AWS_REGION and AWS_DEFAULT_REGION: a signature must
    be scoped to the API's own region, and a CI job's default region is often
    another one. A custom domain carries no region, so there the environment
    (or the profile's ``region``) decides.
    """
    region = (
        explicit
        or region_of_host(urllib.parse.urlsplit(api_url).hostname or "")
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or session.get_config_variable("region")
    )
    if not region:
        why = _LOCAL_HINT if is_local(api_url) else "the API's URL is a custom domain, which does not say"
        raise ConfigurationError(f"no region to sign for: pass --region, or set AWS_REGION ({why})")
    return region


def route(*segments: str) -> str:
    """A path from its segments, each quoted whole: an ID cannot reach another route.

    >>> route("holds", "hold-1", "renew")
    '/holds/hold-1/renew'
    >>> route("holds", "../maintenance?x=1")
    '/holds/..%2Fmaintenance%3Fx%3D1'
    """
    return "".join("/" + urllib.parse.quote(segment, safe="") for segment in segments)


class Api:
    """JSON requests to one deployment of the API (its stage URL, e.g. ``https://…/api``)."""

    def __init__(self, base_url: str, region: str, credentials: Credentials) -> None:
        self.base_url = base_url.rstrip("/")
        self.region = region
        self._credentials = credentials
        self._user_agent = f"sfn-pauser-cli/{__version__} python/{platform.python_version()}"

    @classmethod
    def from_environment(cls, base_url: str, region: str | None = None) -> "Api":
        """Credentials from botocore's standard chain; ConfigurationError when there are none."""
        session = botocore.session.get_session()
        credentials = session.get_credentials()
        if credentials is None:
            if is_local(base_url):
                raise ConfigurationError(f"no AWS credentials found to sign with; {_LOCAL_HINT}")
            raise ConfigurationError(
                "no AWS credentials found; the API needs SigV4-signed requests. botocore looked in the "
                "environment (AWS_ACCESS_KEY_ID, ...), AWS_PROFILE and ~/.aws, SSO, and container and "
                "instance roles; in GitHub Actions, use aws-actions/configure-aws-credentials first"
            )
        return cls(base_url, resolve_region(region, base_url, session), credentials)

    def get(self, path: str, query: dict[str, str], *, deadline: float | None = None) -> Any:
        return self._call("GET", path, query=query, retry=True, deadline=deadline)

    def post(self, path: str, body: dict[str, Any], *, retry: bool = False, deadline: float | None = None) -> Any:
        """POST a JSON body. ``retry`` only for requests that are safe to repeat."""
        return self._call("POST", path, body=body, retry=retry, deadline=deadline)

    def delete(self, path: str, *, retry: bool = True, deadline: float | None = None) -> Any:
        """DELETE, with no body. Retried by default: the API's DELETEs are idempotent."""
        return self._call("DELETE", path, retry=retry, deadline=deadline)

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        retry: bool,
        deadline: float | None,
    ) -> Any:
        """One request, tried again after a pause when it is safe to and time allows.

        ``deadline`` (``time.monotonic()``) bounds the waiting: no request starts
        after it, and none waits for an answer much beyond it.
        """
        delays = list(_RETRY_DELAYS) if retry else []
        while True:
            timeout = REQUEST_TIMEOUT_SECONDS
            if deadline is not None:
                timeout = min(timeout, max(deadline - time.monotonic(), 5.0))
            try:
                return self._send(method, path, query, body, timeout)
            except (ApiError, Unreachable) as error:
                transient = not isinstance(error, ApiError) or error.status in _RETRY_STATUSES
                if not (transient and delays) or (deadline is not None and time.monotonic() + delays[0] > deadline):
                    raise
                time.sleep(delays.pop(0))

    def _send(
        self, method: str, path: str, query: dict[str, str] | None, body: dict[str, Any] | None, timeout: float
    ) -> Any:
        url = self.base_url + path
        if query:
            # SigV4 signs the query as sent, and API Gateway checks it in AWS's
            # strict encoding (everything but A-Z a-z 0-9 - _ . ~ escaped).
            url += "?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote, safe="")
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json", "User-Agent": self._user_agent}
        if data is not None:
            headers["Content-Type"] = "application/json"
        signed = AWSRequest(method=method, url=url, data=data, headers=headers)
        # Frozen per request, so credentials that refresh (a role's) stay fresh over a long --wait.
        SigV4Auth(self._credentials.get_frozen_credentials(), SERVICE, self.region).add_auth(signed)
        request = urllib.request.Request(url, data=data, method=method, headers=dict(signed.headers.items()))
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return _decode(response.status, response.read(), response.headers)
        except urllib.error.HTTPError as error:
            with error:
                raise _api_error(method, path, error.code, error.read(), error.headers) from None
        except urllib.error.URLError as error:
            raise Unreachable(f"cannot reach {self.base_url}: {_reason(error.reason)}") from None
        except (HTTPException, OSError) as error:
            raise Unreachable(f"no answer from {method} {url} within {timeout:.0f}s ({_reason(error)})") from None


def _decode(status: int, raw: bytes, headers: Any) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        kind = headers.get("Content-Type", "no content type")
        raise ApiError(
            status, "NotJson", f"the API answered {status} with a body that is not JSON ({kind})", None
        ) from None


def _api_error(method: str, path: str, status: int, raw: bytes, headers: Any) -> ApiError:
    """The error as the API stated it, or as API Gateway did before reaching the API.

    The API's errors are ``{"Code", "Message"}``. API Gateway's own are
    ``{"message"}`` with the type in ``x-amzn-ErrorType`` (a bad signature, a
    denied ``execute-api:Invoke``, throttling), and a route it does not have
    looks like a missing signature: 403 "Missing Authentication Token".
    """
    text = raw.decode("utf-8", errors="replace")
    try:
        body = json.loads(text) if text.strip() else None
    except ValueError:
        body = None
    fields = body if isinstance(body, dict) else {}
    gateway_type = (headers.get("x-amzn-ErrorType") or "").split(":", 1)[0]
    code = str(fields.get("Code") or gateway_type or f"HTTP{status}")
    message = str(fields.get("Message") or fields.get("message") or text.strip()[:300] or f"HTTP {status}")
    if status == 403 and message == "Missing Authentication Token":
        code = "NoSuchRoute"
        message = (
            f"the API has no route {method} {path} (API Gateway answers 403 Missing Authentication Token); "
            "is --api the stage's URL, e.g. https://ID.execute-api.REGION.amazonaws.com/api, and is the "
            "deployed sfn-pauser recent enough?"
        )
    return ApiError(status, code, message, body)


def _reason(reason: object) -> str:
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    return str(reason) or type(reason).__name__
