# syntax=docker/dockerfile:1
# The migration image: the asyncmig command plus this project's sql/, rollback/ and
# seeds/, for an init container, a Kubernetes Job or the compose `migrate` service.
#
#   docker build -t registry.example.com/myapp/migrations:1.0.0 .
#   docker run --rm -e DATABASE_URL=postgresql://… registry.example.com/myapp/migrations:1.0.0
#
# Runs as uid 10001 (numeric, so Kubernetes can enforce runAsNonRoot) and writes nothing
# to its file system, so it works with readOnlyRootFilesystem.

ARG PYTHON_IMAGE=python:3.12-slim

# --- build: install the package and its dependencies into a virtualenv -----------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/asyncmig
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src/ src/
RUN /opt/asyncmig/bin/pip install . \
    && /opt/asyncmig/bin/asyncmig --help >/dev/null

# --- runtime: the virtualenv and the migration files, nothing else ----------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="asyncmig migrations" \
      org.opencontainers.image.description="Applies this project's PostgreSQL migrations with asyncmig"
ENV PATH=/opt/asyncmig/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NO_COLOR=1
RUN groupadd --system --gid 10001 asyncmig \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin asyncmig
COPY --from=build /opt/asyncmig /opt/asyncmig
WORKDIR /migrations
COPY sql/ sql/
COPY rollback/ rollback/
COPY seeds/ seeds/
USER 10001:10001
ENTRYPOINT ["asyncmig"]
CMD ["migrate", "--wait-for-db", "60s", "--json"]
