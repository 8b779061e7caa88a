//! The proxy's Prometheus metrics.

use flotilla_core::metrics::{Counter, Gauge, Registry};

#[derive(Clone)]
pub struct ProxyMetrics {
    pub registry: Registry,
    pub connections: Gauge,
    pub auth_failures: Counter,
    pub protocol_errors: Counter,
    pub upstream_subscriptions: Gauge,
}

/// Per-org counters, looked up once per connection.
#[derive(Clone)]
pub struct OrgMetrics {
    pub msgs_in: Counter,
    pub bytes_in: Counter,
    pub msgs_out: Counter,
    pub bytes_out: Counter,
    pub drops: Counter,
    pub denials: Counter,
}

impl ProxyMetrics {
    pub fn new(registry: Registry) -> Self {
        ProxyMetrics {
            connections: registry.gauge("flotilla_proxy_connections", "Open client connections.", &[]),
            auth_failures: registry.counter("flotilla_proxy_auth_failures_total", "Rejected CONNECT attempts.", &[]),
            protocol_errors: registry.counter(
                "flotilla_proxy_protocol_errors_total",
                "Connections closed for malformed protocol input.",
                &[],
            ),
            upstream_subscriptions: registry.gauge(
                "flotilla_proxy_upstream_subscriptions",
                "Upstream subscriptions, each shared by every client that needs it.",
                &[],
            ),
            registry,
        }
    }

    pub fn queue_depth(&self, org: &str) -> Gauge {
        self.registry.gauge("flotilla_proxy_client_queue_depth", "Messages waiting in client queues.", &[("org", org)])
    }

    pub fn org(&self, org: &str) -> OrgMetrics {
        let r = &self.registry;
        let l = [("org", org)];
        OrgMetrics {
            msgs_in: r.counter("flotilla_proxy_messages_in_total", "Messages published by clients.", &l),
            bytes_in: r.counter("flotilla_proxy_bytes_in_total", "Payload bytes published by clients.", &l),
            msgs_out: r.counter("flotilla_proxy_messages_out_total", "Messages delivered to clients.", &l),
            bytes_out: r.counter("flotilla_proxy_bytes_out_total", "Payload bytes delivered to clients.", &l),
            drops: r.counter(
                "flotilla_proxy_slow_consumer_drops_total",
                "Deliveries dropped because a client's queue was full.",
                &l,
            ),
            denials: r.counter("flotilla_proxy_permission_denials_total", "Publishes and subscriptions refused.", &l),
        }
    }
}
