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
# module github.com/jaegertracing/jaeger v1.76.0 == Jaeger v2.13.0 (CHANGELOG: "v1.76.0 / v2.13.0
# (2025-12-03)"); cmd/jaeger at that tag is the Jaeger v2 binary. Newer tags (v1.77.0+, v2.x module
# paths) answer 403 from the proxy here.
JAEGER_MODULE: Final = "github.com/jaegertracing/jaeger"
JAEGER_MODULE_VERSION: Final = "v1.76.0"
JAEGER_VERSION: Final = "2.13.0"

# Loki: newest release in the proxy. Its go.mod has replace directives, so it is built through a generated
# wrapper module that repeats them.
LOKI_MODULE: Final = "github.com/grafana/loki/v3"
LOKI_VERSION: Final = "v3.7.8"
# Loki's go.mod replaces this module with a local directory that the module zip does not contain
# (nested module); this is the version its go.mod requires, the newest the proxy serves.
LOKI_PUSH_MODULE: Final = "github.com/grafana/loki/pkg/push"
LOKI_PUSH_VERSION: Final = "v0.0.0-20250630054201-94c0ba7b0952"

# Prometheus and Alertmanager come from Debian bookworm packages (no Go build); the launcher only checks
# that the installed versions are at least these.
PROMETHEUS_DEB: Final = "prometheus"
PROMETHEUS_MIN_VERSION: Final = (2, 33, 0)  # --web.enable-remote-write-receiver
PROMETHEUS_VERSION: Final = "2.42.0"  # what bookworm ships; docker-compose pins the same
ALERTMANAGER_DEB: Final = "prometheus-alertmanager"
ALERTMANAGER_VERSION: Final = "0.25.0"
ALERTMANAGER_MIN_VERSION: Final = (0, 24, 0)

# Go toolchain: Loki v3.7.8's go.mod says `go 1.26.5`; the collector needs 1.25, Jaeger 1.24.6.
GO_MIN_VERSION: Final = (1, 26, 5)

# Container images for docker-compose.yml (documented here so there is one list to bump).
IMAGES: Final = {
    "otel-collector": f"otel/opentelemetry-collector-contrib:{COLLECTOR_VERSION}",
    "jaeger": f"jaegertracing/jaeger:{JAEGER_VERSION}",
    "prometheus": f"prom/prometheus:v{PROMETHEUS_VERSION}",
    "alertmanager": f"prom/alertmanager:v{ALERTMANAGER_VERSION}",
    "loki": f"grafana/loki:{LOKI_VERSION.removeprefix('v')}",
}
