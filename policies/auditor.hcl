# auditor: read-only oversight. May list leases (which never carry passwords) and read the
# gateway's status. No secrets, no credentials, no configuration values.

database "*" {
  capabilities = ["list_leases"]
}

gateway "*" {
  capabilities = ["status"]
}

# Belt and braces: even if another policy bound to the same identity grants secrets or
# credentials, the auditor's binding never reads them (an explicit deny wins over any grant).
secret "*" {
  capabilities = ["deny"]
}
