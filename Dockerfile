# One image for every UPM service; compose.yaml runs it once per service.
FROM python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends coreutils jq postgresql-client \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY events events
COPY services services
COPY projections projections
COPY providers providers
COPY policies policies
RUN pip install --no-cache-dir . \
    && useradd --uid 65532 --user-group --no-create-home --home-dir /data --shell /usr/sbin/nologin upm \
    && mkdir -p /data && chown upm:upm /data && chmod 0700 /data
# a named user (the CLI's identity is the login name; without one it would be uid-65532), and a data
# folder it owns: a named volume mounted on /data starts with this ownership, so it is writable
USER 65532:65532
ENV UPM_DATA=/data
VOLUME ["/data"]
ENTRYPOINT ["upm"]
