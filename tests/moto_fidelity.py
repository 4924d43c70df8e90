"""Where moto is less faithful than AWS in ways our tests depend on, make it faithful.

S3 conditional writes: AWS lets exactly one of many concurrent
``PutObject(If-None-Match: *)`` calls create a key. moto checks, then writes,
without a lock, so two threads can both "win" (and one can crash reading a
buffer the other just closed). Claims rely on the AWS behaviour, so tests,
benchmarks and the local stack serialise moto's S3 request handling.
"""

import functools
import threading
from collections.abc import Callable
from typing import Any

from moto.s3.responses import S3Response

_S3_LOCK = threading.RLock()
_PATCHED = "_sfn_pauser_atomic"


def make_s3_atomic() -> None:
    """Run each moto S3 request under one lock, as S3's own per-key atomicity would."""
    for name in ("key_response", "bucket_response"):
        original = getattr(S3Response, name)
        if getattr(original, _PATCHED, False):
            continue
        setattr(S3Response, name, _locked(original))


def _locked(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with _S3_LOCK:
            return method(*args, **kwargs)

    setattr(locked, _PATCHED, True)
    return locked
