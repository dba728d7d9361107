# dev: allow everything, like Vault's root token. Bound only to the local dev identity that
# `make dev` creates. Never bind it to anything in production.

secret "*" {
  capabilities = ["read"]
}

database "*" {
  capabilities = ["read", "watch", "renew", "revoke", "revoke_any", "list_leases"]
}

config "*" {
  capabilities = ["read", "watch"]
}

service "*" {
  capabilities = ["discover", "register"]
}

gateway "*" {
  capabilities = ["status"]
}
