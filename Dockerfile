# moondream-mcp over streamable HTTP, for MCP clients on other machines.
#
#   docker build -t mcp-server-moondream .
#   docker run -p 8000:8000 -e MOONDREAM_MCP_TOKEN -e MOONDREAM_API_KEY -v ~/Pictures:/data:ro mcp-server-moondream
#
# The token and the key come from the environment when the container starts; none is baked into the image.
# The server refuses to listen on 0.0.0.0 without MOONDREAM_MCP_TOKEN.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE CHANGELOG.md ./
COPY moondream_mcp ./moondream_mcp
COPY moondream_emulator ./moondream_emulator
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MOONDREAM_MCP_ALLOWED_DIRS=/data \
    MOONDREAM_MCP_DATA_DIR=/state
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl \
    && rm -rf /wheels \
    && groupadd --gid 10001 moondream \
    && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin moondream \
    && mkdir -p /data /state \
    && chown moondream:moondream /state
COPY docker/healthcheck.py /usr/local/bin/moondream-mcp-healthcheck
USER 10001:10001
# Mount the images the agent may look at on /data (read-only is enough unless tools should write there).
VOLUME ["/state"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "/usr/local/bin/moondream-mcp-healthcheck"]
ENTRYPOINT ["moondream-mcp", "serve", "--transport", "http", "--host", "0.0.0.0", "--port", "8000"]
