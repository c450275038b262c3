# The risk worker image: `docker compose up` (docker-compose.yml) runs it as the topics job, the two
# workers and the market simulator. Settings come from RISK_* environment variables (worker/settings.py).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY worker ./worker
COPY topics ./topics
COPY metrics ./metrics
COPY examples ./examples
# The worker's dependencies only: no extras (the embedded broker and matplotlib serve the demo, tests,
# report). gcc and the C library's headers (the image has Python's) let the install compile the core
# with mypyc (setup.py; docs/build.md); they go again after it, and so do the sources, so that
# `python -m worker` runs the installed, compiled package and not /app/worker (the working directory
# comes first on sys.path). The build fails if the core did not compile.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && pip install . \
    && apt-get purge -y --auto-remove gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/* build *.egg-info worker topics metrics pyproject.toml setup.py README.md \
    && cd / && python -c "import worker.core as c, sys; c.COMPILED or sys.exit('the core is not compiled: ' + str(c.PURE_REASON))" \
    && useradd --create-home --uid 10001 risk

# the HTTP server listens on 127.0.0.1 unless told otherwise: whoever runs the image decides where it is
# reachable (docker-compose.yml sets RISK_WEB_BIND=0.0.0.0 and a bearer token)
ENV RISK_PARAMS=/app/examples/params.toml
USER risk
EXPOSE 6066
CMD ["python", "-m", "worker", "worker"]
