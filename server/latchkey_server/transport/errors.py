"""The one mapping from domain errors to gRPC statuses."""

from __future__ import annotations

import logging
import math
from typing import NoReturn

import grpc

from latchkey_server.errors import LatchkeyError, Status

log = logging.getLogger("latchkey.transport")

_CODES: dict[Status, grpc.StatusCode] = {status: grpc.StatusCode[status.value] for status in Status}
INTERNAL_MESSAGE = (
    "internal error in the latchkey gateway; the operator can find details in its log"
)


def grpc_code(error: LatchkeyError) -> grpc.StatusCode:
    return _CODES[error.status]


async def abort_with(
    context: grpc.aio.ServicerContext[object, object], error: BaseException
) -> NoReturn:
    """Abort the RPC with the status for `error` (INTERNAL, fixed message, for unknown errors)."""
    if isinstance(error, LatchkeyError):
        message = error.message
        if error.retry_after is not None:
            seconds = max(1, math.ceil(error.retry_after))
            context.set_trailing_metadata((("retry-after", str(seconds)),))
            message = f"{message} (retry after {seconds}s)"
        await context.abort(grpc_code(error), message)
    # Never put str(error) in the status: it could carry a secret. The type goes to the log.
    log.error("unexpected %s while serving an RPC", type(error).__name__, exc_info=error)
    await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
