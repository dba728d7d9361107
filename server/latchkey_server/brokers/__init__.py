"""Brokers: caching, coalescing, renewal and fan-out between the transport and the upstreams."""
