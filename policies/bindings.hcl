# Which identities get which policies. An identity is a token's identity (e.g. "billing") or an
# mTLS identity (e.g. "spiffe://example.org/billing"). Matching is exact and case-sensitive; a
# trailing "*" matches any suffix, e.g. binding "spiffe://example.org/ops/*" { ... }.
# An identity with no binding gets no policy, so everything it asks for is denied.

# The local dev identity (`make dev`): allow everything. Remove this binding in production.
binding "dev" {
  policies = ["dev"]
}

binding "billing" {
  policies = ["app"]
}

binding "spiffe://example.org/billing" {
  policies = ["app"]
}

binding "operator" {
  policies = ["operator"]
}

binding "auditor" {
  policies = ["auditor"]
}
