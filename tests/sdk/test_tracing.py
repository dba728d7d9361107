"""The SDK propagates the app's trace context when OpenTelemetry is importable, and adds nothing
(and imports nothing) when it is not. The end-to-end trace (app → gateway → Vault) is checked in
tests/gateway/test_tracing_e2e.py."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from opentelemetry.sdk.trace import TracerProvider

from latchkey import _tracing

BASE = (("authorization", "Bearer t"),)


def test_current_context_goes_into_the_metadata() -> None:
    tracer = TracerProvider().get_tracer("app")
    assert _tracing.AVAILABLE
    assert _tracing.with_context(BASE) == BASE  # no span: nothing to propagate
    with tracer.start_as_current_span("app work") as span:
        sent = dict(_tracing.with_context(BASE))
    ctx = span.get_span_context()
    version, trace_id, span_id, flags = sent["traceparent"].split("-")
    assert version == "00"
    assert int(flags, 16) & 1  # sampled
    assert trace_id == f"{ctx.trace_id:032x}"
    assert span_id == f"{ctx.span_id:016x}"
    assert sent["authorization"] == "Bearer t"


def test_rpc_name_from_a_stub_method() -> None:
    class Method:
        _method = b"/latchkey.v1.Secrets/GetSecret"

    assert _tracing.rpc_name(Method()) == "latchkey.v1.Secrets/GetSecret"
    assert _tracing.rpc_name(object()) == "latchkey"


def test_without_opentelemetry_nothing_is_added() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["opentelemetry"] = None  # as if it were not installed
        import latchkey
        from latchkey import _tracing
        base = (("authorization", "Bearer t"),)
        assert not _tracing.AVAILABLE
        assert _tracing.with_context(base) is base
        with _tracing.client_span("latchkey.v1.Secrets/GetSecret", base) as sent:
            assert sent is base
        client = latchkey.Client("127.0.0.1:1")
        client.close()
        assert not any(name.startswith("opentelemetry.") for name in sys.modules)
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
