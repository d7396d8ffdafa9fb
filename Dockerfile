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
RUN pip install --no-cache-dir .
USER 65532:65532
ENTRYPOINT ["upm"]
