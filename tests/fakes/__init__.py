"""In-memory test doubles for the upstreams."""
