# syntax=docker/dockerfile:1
# latchkey gateway image: `latchkey-server serve`, non-root, health-checked over gRPC.
#
#   docker build -t latchkey:dev .
#   docker run --rm -p 7400:7400 \
#     -v "$PWD/gateway.yaml:/etc/latchkey/gateway.yaml:ro" \
#     -v "$PWD/policies:/etc/latchkey/policies:ro" \
#     latchkey:dev
#
# Mount points (nothing secret is baked into the image):
#   /etc/latchkey/gateway.yaml   the config file (`serve --config`; LATCHKEY_* env overrides it)
#   /etc/latchkey/policies/      access policies (read-only volume or ConfigMap)
#   /run/secrets/latchkey-tls/   TLS material (ca.crt, server.crt, server.key) from secrets
#   /var/lib/latchkey/           writable state (owned by the latchkey user; the compose stack
#                                keeps the bootstrap-written config and tokens file here)

ARG PYTHON_VERSION=3.11

# --- build: wheels of both distributions and of every runtime dependency -------------------
FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY server/ server/
COPY clients/python/ clients/python/
# 1. The two distributions (the SDK `latchkey` holds the generated stubs the server imports).
# 2. Their runtime dependencies, resolved against those two wheels (never the index's
#    `latchkey`); no dev extras.
RUN pip wheel --no-deps --wheel-dir /wheels ./clients/python . \
 && pip wheel --wheel-dir /wheels /wheels/*.whl

# --- runtime: slim Python, the server's wheels only, non-root ------------------------------
FROM python:${PYTHON_VERSION}-slim AS runtime
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/latchkey/bin:$PATH
RUN groupadd --system --gid 10001 latchkey \
 && useradd --system --uid 10001 --gid latchkey --home-dir /var/lib/latchkey \
      --no-create-home --shell /usr/sbin/nologin latchkey \
 && mkdir -p /etc/latchkey/policies /var/lib/latchkey \
 && chown latchkey:latchkey /var/lib/latchkey
# Only the wheels come over from the build stage (bind-mounted, so they leave no layer).
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/latchkey \
 && /opt/latchkey/bin/pip install --no-index --find-links=/wheels latchkey-server \
 && latchkey-server --help >/dev/null
USER 10001:10001
WORKDIR /var/lib/latchkey
EXPOSE 7400
# The shipped probe: grpc.health.v1.Health/Check on the gateway, exit 0 only when SERVING.
# TLS is the gateway's default, so the probe verifies it with the CA from the TLS secret; for a
# plaintext (`insecure`) gateway set LATCHKEY_HEALTHCHECK_CACERT= (empty); for mTLS also set
# LATCHKEY_HEALTHCHECK_CERT and LATCHKEY_HEALTHCHECK_KEY.
ENV LATCHKEY_HEALTHCHECK_CACERT=/run/secrets/latchkey-tls/ca.crt
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["latchkey-server", "healthcheck", "--addr", "127.0.0.1:7400", "--timeout", "3"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["latchkey-server"]
CMD ["serve", "--config", "/etc/latchkey/gateway.yaml"]
