# syntax=docker/dockerfile:1
# Build stage: install the locked dependencies and the package; nothing of it reaches the final image but the
# virtualenv.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
# Dependencies from the lock (every file hash-checked) in their own layer, so a code change reuses it; then
# the package itself without resolving anything again.
COPY requirements/runtime.lock ./requirements/runtime.lock
RUN /opt/venv/bin/pip install --upgrade pip \
 && /opt/venv/bin/pip install --require-hashes -r requirements/runtime.lock
COPY pyproject.toml README.md ./
COPY reconciler ./reconciler
RUN /opt/venv/bin/pip install --no-deps .

# Final stage: slim Python, the virtualenv, a non-root user; no compilers, no pip cache, no sources.
FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 65532 reconciler \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin reconciler
COPY --from=build /opt/venv /opt/venv
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["python", "-m", "reconciler"]
CMD ["run"]
