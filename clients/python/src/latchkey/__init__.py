"""latchkey: the Python SDK of the latchkey gateway (sync and asyncio).

import latchkey

with latchkey.Client() as client:          # LATCHKEY_ADDR, LATCHKEY_TOKEN, ...
    print(client.secrets.get("demo/app").data)
"""

from latchkey._async._client import AsyncClient
from latchkey._async._secrets import AsyncRotatingCredentials, AsyncWatchedSecret
from latchkey._async._services import AsyncRegistration
from latchkey._async._watch import AsyncWatch
from latchkey._errors import (
    Cancelled,
    ConfigurationError,
    DeadlineExceeded,
    DevStackNotRunning,
    FailedPrecondition,
    HandshakeFailed,
    Internal,
    InvalidArgument,
    LatchkeyError,
    NoHealthyInstances,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    StatusCode,
    StatusError,
    TransportError,
    Unauthenticated,
    Unavailable,
)
from latchkey._models import (
    CheckState,
    ConfigChange,
    ConfigEntry,
    ConfigEvent,
    DatabaseCredentials,
    Freshness,
    GatewayStatus,
    Instance,
    LeaseInfo,
    RegistrationHealth,
    RenewedLease,
    Secret,
    ServiceEvent,
    StreamStatus,
    UpstreamStatus,
)
from latchkey._sync._client import Client
from latchkey._sync._secrets import RotatingCredentials, WatchedSecret
from latchkey._sync._services import Registration
from latchkey._sync._watch import Watch

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "AsyncRegistration",
    "AsyncRotatingCredentials",
    "AsyncWatch",
    "AsyncWatchedSecret",
    "Cancelled",
    "CheckState",
    "Client",
    "ConfigChange",
    "ConfigEntry",
    "ConfigEvent",
    "ConfigurationError",
    "DatabaseCredentials",
    "DeadlineExceeded",
    "DevStackNotRunning",
    "FailedPrecondition",
    "Freshness",
    "GatewayStatus",
    "HandshakeFailed",
    "Instance",
    "Internal",
    "InvalidArgument",
    "LatchkeyError",
    "LeaseInfo",
    "NoHealthyInstances",
    "NotFound",
    "PermissionDenied",
    "Registration",
    "RegistrationHealth",
    "RenewedLease",
    "ResourceExhausted",
    "RotatingCredentials",
    "Secret",
    "ServiceEvent",
    "StatusCode",
    "StatusError",
    "StreamStatus",
    "TransportError",
    "Unauthenticated",
    "Unavailable",
    "UpstreamStatus",
    "Watch",
    "WatchedSecret",
]
