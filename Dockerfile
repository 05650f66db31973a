# The worker and the read API; docker-compose.yml runs both from this image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src

# The locked dependencies get their own layer, rebuilt only when the lock changes.
COPY requirements.lock ./
RUN pip install -r requirements.lock

COPY pyproject.toml ./
COPY worker ./worker
RUN pip install --no-deps . && rm -rf /src

# Run from an empty directory so `python -m worker` imports the installed package.
RUN useradd --system --uid 10001 --create-home --home-dir /app app
WORKDIR /app
USER app

EXPOSE 8000
CMD ["python", "-m", "worker", "run"]
