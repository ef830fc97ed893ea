# zdmproxy CLI image (the sidecar daemon comes with its own issue).
FROM python:3.11-slim
RUN useradd --create-home zdmproxy
WORKDIR /app
COPY pyproject.toml README.md ./
COPY zdmproxy ./zdmproxy
RUN pip install --no-cache-dir .
USER zdmproxy
ENTRYPOINT ["zdmproxy"]
CMD ["--help"]
