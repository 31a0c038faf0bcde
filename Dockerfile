# rtcore in a container: small (python slim, no compiler, no pip cache), runs as a non-root user.
#
#   docker build -t rtcore .
#   docker run --rm -p 8765:8765 -p 127.0.0.1:8766:8766 --ulimit nofile=65536:65536 \
#       -v "$PWD/rtcore.toml:/etc/rtcore/rtcore.toml:ro" rtcore serve --config /etc/rtcore/rtcore.toml
#
# Without a config the embedded default app serves (no API key: for trying it out only; the
# server logs a SECURITY warning). See docs/deploy.md.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY rtcore ./rtcore
# The dependencies at the versions the test suite runs with (constraints.txt), not the newest.
RUN pip wheel --no-cache-dir -c constraints.txt --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin rtcore
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl && rm -rf /wheels
USER rtcore
EXPOSE 8765 8766
# The health check asks GET /healthz at RTCORE_HEALTHZ_URL: set it (docker run -e, compose's
# environment) when the config moves the server API (api_port, api_host).
ENV RTCORE_HEALTHZ_URL=http://127.0.0.1:8766/healthz
HEALTHCHECK --interval=10s --timeout=3s \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['RTCORE_HEALTHZ_URL'], timeout=2)"]
ENTRYPOINT ["rtcore"]
CMD ["serve", "--host", "0.0.0.0", "--api-host", "0.0.0.0"]
