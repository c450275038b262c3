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

# the HTTP server listens on 127.0.0.1 unless told otherwise: whoever runs the image decides where it is
# reachable (docker-compose.yml sets RISK_WEB_BIND=0.0.0.0 and a bearer token)
ENV RISK_PARAMS=/app/examples/params.toml
USER risk
EXPOSE 6066
CMD ["python", "-m", "worker", "worker"]
