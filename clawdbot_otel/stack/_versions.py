"""Every pinned version of the observability stack, in one place.

The native build (`clawdbot-otel stack build`) and docker-compose.yml use the same releases; the cache is
keyed by these strings, so changing a pin here is what triggers a rebuild.
"""

from __future__ import annotations

from typing import Final

# OpenTelemetry Collector: builder (ocb) and every component in otel-collector/builder-config.yaml.
# v0.161.0 is the newest release whose contrib prometheus and load_balancing exporters the Go module
# proxy serves (v0.162.0+ answer 403). docker-compose uses otel/opentelemetry-collector-contrib:0.161.0.
COLLECTOR_VERSION: Final = "0.161.0"
BUILDER_MODULE: Final = "go.opentelemetry.io/collector/cmd/builder"

# Jaeger publishes v1.x (Go module tag) and v2.x (binary/image version) from the same commit:
# module github.com/jaegertracing/jaeger v1.75.0 == Jaeger v2.12.0 (CHANGELOG: "v1.75.0 / v2.12.0");
# cmd/jaeger at that tag is the Jaeger v2 binary. v1.75.0 is the newest approved release in the module
# proxy here (v1.76.0 is served but not approved).
JAEGER_MODULE: Final = "github.com/jaegertracing/jaeger"
JAEGER_MODULE_VERSION: Final = "v1.75.0"
JAEGER_VERSION: Final = "2.12.0"

# VictoriaLogs (Apache-2.0): the log store. Built from its Go module (app/victoria-logs); the same
# release as the official image in docker-compose.yml. Loki is AGPL and never built or fetched here.
VICTORIALOGS_MODULE: Final = "github.com/VictoriaMetrics/VictoriaLogs"
VICTORIALOGS_VERSION: Final = "v1.52.2"

# telemetrygen (Apache-2.0): the collector-contrib load generator, for the capacity benchmark
# (bench/capacity_bench.py), at the same contrib release as the collector. Its go.mod says go 1.26.0.
TELEMETRYGEN_MODULE: Final = "github.com/open-telemetry/opentelemetry-collector-contrib/cmd/telemetrygen"
TELEMETRYGEN_VERSION: Final = f"v{COLLECTOR_VERSION}"

# Prometheus and Alertmanager come from Debian bookworm packages (no Go build); the launcher only checks
# that the installed versions are at least these.
PROMETHEUS_DEB: Final = "prometheus"
PROMETHEUS_MIN_VERSION: Final = (2, 33, 0)  # --web.enable-remote-write-receiver
PROMETHEUS_VERSION: Final = "2.42.0"  # what bookworm ships; docker-compose pins the same
ALERTMANAGER_DEB: Final = "prometheus-alertmanager"
ALERTMANAGER_VERSION: Final = "0.25.0"
ALERTMANAGER_MIN_VERSION: Final = (0, 24, 0)

# Go toolchain: the newest go directive among the pinned modules (checked at build time by `go` itself).
GO_MIN_VERSION: Final = (1, 26, 0)  # telemetrygen v0.161.0 (the collector alone needs 1.25)

# Container images for docker-compose.yml (documented here so there is one list to bump).
IMAGES: Final = {
    "otel-collector": f"otel/opentelemetry-collector-contrib:{COLLECTOR_VERSION}",
    "jaeger": f"jaegertracing/jaeger:{JAEGER_VERSION}",
    "prometheus": f"prom/prometheus:v{PROMETHEUS_VERSION}",
    "alertmanager": f"prom/alertmanager:v{ALERTMANAGER_VERSION}",
    "victorialogs": f"victoriametrics/victoria-logs:{VICTORIALOGS_VERSION}",
}

# Jaeger UI: the Go module embeds only a placeholder page, so `stack build` installs a built jaeger-ui into
# the cache (clawdbot_otel/stack/_jaeger_ui.py). v1.76.0 is the UI of Jaeger v2.13.0; the v2.12.0 backend
# serves every endpoint it calls (/api/services, /api/services/{svc}/operations, /api/traces,
# /api/traces/{id}; the browser test checks each answered 200).
JAEGER_UI_VERSION: Final = "v1.76.0"
# Upstream's release asset: the same build, its files under packages/jaeger-ui/build/.
JAEGER_UI_RELEASE_URL: Final = (
    f"https://github.com/jaegertracing/jaeger-ui/releases/download/{JAEGER_UI_VERSION}/assets.tar.gz"
)
