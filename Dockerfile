# platform-kpi-exporter: a slim, non-root image.
#   docker build -t platform-kpi-exporter .
#   docker build --build-arg EXTRAS=github-app -t platform-kpi-exporter:slim .
#   docker run -p 9877:9877 -v $PWD/examples/config.yaml:/etc/platform-kpi-exporter/config.yaml:ro \
#              -v pke-state:/var/lib/platform-kpi-exporter platform-kpi-exporter
# EXTRAS picks the optional dependencies (README, "Image size"): aws (Cost Explorer, CloudWatch,
# FOCUS in S3), parquet (FOCUS Parquet files), github-app (GitHub App auth), otel (tracing with
# --otlp-endpoint), postgres (a PostgreSQL state shared by replicas), azure (Azure workload or
# managed identity; not in the default); "" for none.
FROM python:3.11-slim AS build
ARG EXTRAS="aws,parquet,github-app,otel,postgres"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY requirements/image.lock requirements/image.lock
COPY exporter ./exporter
# Every version comes from the lock; only what EXTRAS needs is installed.
RUN pip install --no-cache-dir --prefix=/install --constraint requirements/image.lock ".${EXTRAS:+[$EXTRAS]}"

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/platform-kpi-exporter --create-home exporter
COPY --from=build /install /usr/local
USER 10001
WORKDIR /var/lib/platform-kpi-exporter
ENV PLATFORM_KPI_STATE__PATH=/var/lib/platform-kpi-exporter/state.db \
    PYTHONUNBUFFERED=1
VOLUME ["/etc/platform-kpi-exporter", "/var/lib/platform-kpi-exporter"]
EXPOSE 9877
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9877/healthz', timeout=2).status == 200 else 1)"
ENTRYPOINT ["platform-kpi-exporter"]
CMD ["run", "--config", "/etc/platform-kpi-exporter/config.yaml"]
