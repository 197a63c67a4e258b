# The tradestream server: docker build -t tradestream . && docker run --init -p 8000:8000 tradestream
# Configuration is the environment variables of docs/configuration.md. Without DATABASE_URL the
# server starts an embedded PostgreSQL with its data in DATA_DIR (/var/lib/tradestream); keep it
# across containers with a volume: docker run --init -p 8000:8000 -v tradestream-data:/var/lib/tradestream tradestream
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Exactly the versions make test ran on: every package from the lock, checked against its hashes,
# then the project itself with the lock's setuptools (no build environment from the index).
COPY requirements.lock pyproject.toml README.md /tmp/tradestream/
COPY api /tmp/tradestream/api
COPY domain /tmp/tradestream/domain
RUN pip install --require-hashes --requirement /tmp/tradestream/requirements.lock \
 && pip install --no-deps --no-build-isolation /tmp/tradestream \
 && rm -rf /tmp/tradestream

# An unprivileged user whose home is DATA_DIR (the embedded PostgreSQL runs as this user too).
RUN groupadd --system --gid 10001 tradestream \
 && useradd --system --uid 10001 --gid tradestream --create-home \
        --home-dir /var/lib/tradestream --shell /usr/sbin/nologin tradestream

ENV HOST=0.0.0.0 \
    PORT=8000 \
    DATA_DIR=/var/lib/tradestream

USER 10001:10001
WORKDIR /var/lib/tradestream
EXPOSE 8000

# No curl in the slim image: probe /healthz with the standard library.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=2)"

CMD ["tradestream", "serve"]
