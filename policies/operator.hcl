# operator: runs the gateway. Sees and revokes every lease, reads its status, discovers any
# service and reads any configuration. No static secrets.

# List every lease ("*" is how a listing of all roles is asked for) and force-revoke any
# holder's lease; renew and revoke on behalf of apps during incidents.
database "*" {
  capabilities = ["list_leases", "revoke_any", "revoke", "renew"]
}

config "*" {
  capabilities = ["read", "watch"]
}

service "*" {
  capabilities = ["discover"]
}

gateway "*" {
  capabilities = ["status"]
}
