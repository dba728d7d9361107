# app: what the billing application may use.
# Bound to the billing app's token identity and its mTLS identity (see bindings.hcl).
# Anything not granted here is denied.

# Static secrets under secret/data/billing/ (KV v2 paths are "<mount>/data/<path>").
secret "secret/data/billing/*" {
  capabilities = ["read"]
}

# ...except the root credentials, even though the rule above matches them: a deny always wins.
secret "secret/data/billing/root" {
  capabilities = ["deny"]
}

# Dynamic database credentials for every billing role: fetch, stream, renew and give back
# its own leases (revoking other holders' leases needs "revoke_any", which it does not get).
database "billing-*" {
  capabilities = ["read", "watch", "renew", "revoke"]
}

# Live configuration: Get any key under billing/, List and Watch the billing/ prefix.
# A config pattern ending in "/" covers the prefix itself and every key under it.
config "billing/" {
  capabilities = ["read", "watch"]
}

# Feature flags: the flagd flag sets under flags/production/ (LatchkeyProvider and
# `latchkey flags` watch the prefix; a stock flagd provider's SyncFlags needs "watch" and
# FetchAllFlags "read", with the prefix as its selector).
config "flags/production/" {
  capabilities = ["read", "watch"]
}

# Service discovery of the services billing talks to.
service "payments" {
  capabilities = ["discover"]
}

# Self-registration: billing's own instances register in Consul as "billing" while they run
# (Discovery.Register, `latchkey services register billing ...`).
service "billing" {
  capabilities = ["register"]
}

# Its own identity and the upstreams' freshness (`latchkey status`, Gateway.Status).
gateway "status" {
  capabilities = ["status"]
}
