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
    pub sub_changes_held: Counter,
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
            sub_changes_held: r.counter(
                "flotilla_proxy_subscription_changes_held_total",
                "SUBs and UNSUBs held back by limits.subscription_changes_per_sec.",
                &l,
            ),
        }
    }
}

/// Messages the upstream client dropped because the proxy's fan-out read
/// its subscriptions too slowly (async-nats reports each as a slow-consumer
/// event; events can themselves be dropped under load, so this is a floor).
pub fn upstream_drops(registry: &Registry) -> Counter {
    registry.counter(
        "flotilla_proxy_upstream_drops_total",
        "Upstream messages dropped because the proxy read them too slowly (at least this many).",
        &[],
    )
}

/// Whether the delivery connection is up: while it is not, no client gets
/// live messages.
pub fn delivery_connected(registry: &Registry) -> Gauge {
    registry.gauge(
        "flotilla_proxy_delivery_connected",
        "1 while the proxy's delivery connection to nats-server is up (clients get live messages), else 0.",
        &[],
    )
}

/// Times the delivery connection ended or could not be made, each followed
/// by a new attempt: live deliveries in between are lost, as core NATS
/// loses them.
pub fn delivery_reconnects(registry: &Registry) -> Counter {
    registry.counter(
        "flotilla_proxy_delivery_reconnects_total",
        "Times the proxy's delivery connection to nats-server ended or could not be made (each is retried).",
        &[],
    )
}

/// Count and report what the upstream connection says about itself.
pub fn on_upstream_event(drops: &Counter, event: async_nats::Event) {
    match event {
        async_nats::Event::SlowConsumer(_) => {
            drops.inc();
            let n = drops.get();
            if n == 1 || n.is_multiple_of(10_000) {
                tracing::warn!(
                    dropped = n,
                    "the proxy reads upstream too slowly: messages were dropped (flotilla_proxy_upstream_drops_total)"
                );
            }
        }
        async_nats::Event::Connected => tracing::info!("upstream connected"),
        async_nats::Event::Disconnected => tracing::warn!("upstream disconnected; reconnecting"),
        other => tracing::warn!(event = %other, "upstream"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_slow_consumer_events_are_counted_and_exported() {
        let registry = Registry::default();
        let drops = upstream_drops(&registry);
        on_upstream_event(&drops, async_nats::Event::SlowConsumer(3));
        on_upstream_event(&drops, async_nats::Event::SlowConsumer(3));
        on_upstream_event(&drops, async_nats::Event::Connected);
        assert_eq!(drops.get(), 2);
        assert!(registry.render().contains("flotilla_proxy_upstream_drops_total 2"), "{}", registry.render());
    }
}
