"""Who may do what: Rego policies decide, embedded (regorus) or on an OPA server."""
