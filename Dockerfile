# The risk worker image: `docker compose up` (docker-compose.yml) runs it as the topics job, the two
# workers and the market simulator. Settings come from RISK_* environment variables (worker/settings.py).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY topics ./topics
COPY metrics ./metrics
COPY examples ./examples
# the worker's dependencies only: no extras (the embedded broker and matplotlib serve the demo, tests, report)
RUN pip install . \
    && useradd --create-home --uid 10001 risk

# in a container the HTTP server (/metrics, /stats) must listen beyond loopback for Prometheus
ENV RISK_PARAMS=/app/examples/params.toml \
    RISK_WEB_HOST=0.0.0.0
USER risk
EXPOSE 6066
CMD ["python", "-m", "worker", "worker"]
