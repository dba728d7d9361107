"""The one mapping from domain errors to gRPC statuses."""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from latchkey_server.errors import LatchkeyError, Status

log = logging.getLogger("latchkey.transport")

_CODES: dict[Status, grpc.StatusCode] = {status: grpc.StatusCode[status.value] for status in Status}
INTERNAL_MESSAGE = (
    "internal error in the latchkey gateway; the operator can find details in its log"
)


def grpc_code(error: LatchkeyError) -> grpc.StatusCode:
    return _CODES[error.status]


def status_name(error: BaseException | None) -> str:
    """The gRPC status name an error becomes (for the audit log); "OK" for None."""
    if error is None:
        return "OK"
    if isinstance(error, LatchkeyError):
        return error.status.value
    if isinstance(error, grpc.aio.AbortError):
        return "ABORTED_BY_HANDLER"
    if isinstance(error, asyncio.CancelledError):
        return "CANCELLED"
    return "INTERNAL"


def _retry_trailers(code: grpc.StatusCode, message: str, seconds: int) -> tuple[Any, ...]:
    """`retry-after` plus google.rpc.Status with RetryInfo in grpc-status-details-bin."""
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=seconds)))
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=[detail])
    rich = rpc_status.to_status(status)
    return (*rich.trailing_metadata, ("retry-after", str(seconds)))


async def abort_with(context: grpc.aio.ServicerContext[Any, Any], error: BaseException) -> NoReturn:
    """Abort the RPC with the status for `error` (INTERNAL, fixed message, for unknown errors)."""
    if isinstance(error, LatchkeyError):
        code = grpc_code(error)
        message = error.message
        if error.retry_after is not None:
            seconds = max(1, math.ceil(error.retry_after))
            message = f"{message} (retry after {seconds}s)"
            context.set_trailing_metadata(_retry_trailers(code, message, seconds))
        await context.abort(code, message)
    # Never put str(error) in the status: it could carry a secret. The type goes to the log.
    log.error("unexpected %s while serving an RPC", type(error).__name__, exc_info=error)
    await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
