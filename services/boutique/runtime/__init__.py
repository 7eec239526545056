"""The shared service runtime: every service is built on these pieces.

- config:  settings from the environment (contract env names), clear start-up errors
- logs:    JSON log lines with service, method, status, duration, request id
- metrics: Prometheus RED metrics for gRPC servers and clients, on a separate port
- tls:     optional TLS / mutual TLS credentials from files
- client:  channels to callees with deadlines and a retry policy (idempotent methods only)
- cache:   values from callees kept in memory with a background refresh (BOUTIQUE_CACHE_TTL_SECONDS)
- health:  the health service; Watch streams end when the server stops taking calls
- server:  gRPC server bootstrap, handler wrappers (metrics, logs), health, reflection, graceful shutdown
"""

from boutique.runtime.config import ConfigError, ServiceConfig
from boutique.runtime.server import ServiceContext, ServiceDefinition, serve

__all__ = ["ConfigError", "ServiceConfig", "ServiceContext", "ServiceDefinition", "serve"]
