"""Upstream adapters: one module per upstream, each the only place that speaks its wire protocol."""
