"""Structured logs: JSON lines (or plain text on a terminal), with the audit log's request id and
the trace id."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Literal

from latchkey_server.access.request import current_request
from latchkey_server.observability.tracing import current_trace_id

LogFormat = Literal["auto", "json", "text"]


class RequestIdFilter(logging.Filter):
    """Adds `request_id` (shared with the audit log) to every record logged during an RPC, and
    `trace_id` while a span is active (tracing on)."""

    def filter(self, record: logging.LogRecord) -> bool:
        info = current_request()
        record.request_id = info.request_id if info is not None else ""
        record.trace_id = current_trace_id()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", "")
        if request_id:
            line["request_id"] = request_id
        trace_id = getattr(record, "trace_id", "")
        if trace_id:
            line["trace_id"] = trace_id
        if record.exc_info and record.exc_info[0] is not None:
            line["exception"] = record.exc_info[0].__name__
        return json.dumps(line, ensure_ascii=True)


def configure_logging(level: str, fmt: LogFormat = "auto") -> None:
    handler = logging.StreamHandler(sys.stderr)
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    if use_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s %(request_id)s %(message)s")
        )
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
