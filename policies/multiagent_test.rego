# Unit tests of multiagent.rego: `troupe policy test` runs every test_* rule here.
package troupe.authz_test

import data.troupe.authz

tenant := {"id": "acme", "status": "active", "plan": "standard"}

member := {"user": "alice", "role": "member"}

admin := {"user": "root", "role": "admin"}

submit(request) := {"action": "task.submit", "tenant": tenant, "subject": member, "request": request}

simple := {"strategy": "simple", "token_budget": 1000, "require_approval": false}

decide(doc) := result if {
	result := authz.decision with input as doc
}

allowed(doc) if decide(doc).allow == true

denied(doc) if decide(doc).allow == false

needs_approval(doc) if {
	decide(doc).allow == true
	decide(doc).require_approval == true
}

reason_has(doc, text) if contains(decide(doc).reason, text)

# ---------------------------------------------------------------- default deny

test_unknown_action_is_denied if denied({"action": "tenant.delete", "tenant": tenant, "subject": admin})

test_no_action_is_denied if denied({"tenant": tenant})

test_empty_input_is_denied if denied({})

test_default_reason_says_no_rule if reason_has({"action": "x"}, "no rule allows")

# ---------------------------------------------------------------- task.submit

test_submit_within_plan_is_allowed if {
	allowed(submit(simple))
	not needs_approval(submit(simple))
}

test_submit_auto_strategy_is_allowed if allowed(submit(object.union(simple, {"strategy": "auto"})))

test_submit_by_suspended_tenant_is_denied if {
	doc := object.union(submit(simple), {"tenant": object.union(tenant, {"status": "suspended"})})
	denied(doc)
	reason_has(doc, "not active")
}

test_submit_with_unknown_plan_is_denied if {
	doc := object.union(submit(simple), {"tenant": object.union(tenant, {"plan": "platinum"})})
	denied(doc)
	reason_has(doc, "unknown")
}

test_submit_dag_on_free_plan_is_denied if {
	doc := object.union(submit(object.union(simple, {"strategy": "dag"})), {"tenant": object.union(tenant, {"plan": "free"})})
	denied(doc)
	reason_has(doc, "strategy 'dag'")
}

test_submit_react_on_free_plan_is_allowed if {
	doc := object.union(submit(object.union(simple, {"strategy": "react"})), {"tenant": object.union(tenant, {"plan": "free"})})
	allowed(doc)
}

test_submit_budget_above_plan_is_denied if {
	doc := submit(object.union(simple, {"token_budget": 200001}))
	denied(doc)
	reason_has(doc, "above the standard plan")
}

test_submit_budget_at_plan_cap_is_allowed if allowed(submit(object.union(simple, {"token_budget": 200000})))

test_submit_large_budget_on_enterprise_needs_approval if {
	doc := object.union(submit(object.union(simple, {"token_budget": 600000})), {"tenant": object.union(tenant, {"plan": "enterprise"})})
	needs_approval(doc)
	reason_has(doc, "token_budget 600000")
}

test_submit_wide_plan_needs_approval if {
	doc := submit(object.union(simple, {"strategy": "dag", "plan": {"width": 7, "tools": []}}))
	needs_approval(doc)
	reason_has(doc, "7 agents")
}

test_submit_plan_at_width_limit_needs_no_approval if {
	doc := submit(object.union(simple, {"strategy": "dag", "plan": {"width": 6, "tools": ["calculator"]}}))
	allowed(doc)
	not needs_approval(doc)
}

test_submit_plan_with_sensitive_tool_needs_approval if {
	doc := submit(object.union(simple, {"strategy": "dag", "plan": {"width": 2, "tools": ["http_fetch"]}}))
	needs_approval(doc)
	reason_has(doc, "sensitive tool")
}

test_submit_plan_with_tool_outside_plan_is_denied if {
	doc := object.union(submit(object.union(simple, {"strategy": "react", "plan": {"width": 1, "tools": ["python_exec"]}})), {"tenant": object.union(tenant, {"plan": "free"})})
	denied(doc)
	reason_has(doc, "does not allow")
}

test_submit_asking_for_approval_gets_it if {
	doc := submit(object.union(simple, {"require_approval": true}))
	needs_approval(doc)
	reason_has(doc, "asked for approval")
}

# ---------------------------------------------------------------- session.access

access(subject, operation, owner) := {
	"action": "session.access",
	"tenant": tenant,
	"subject": subject,
	"request": {"operation": operation, "session": {"id": "s1", "tenant": "acme", "owner": owner}},
}

test_own_session_read_is_allowed if allowed(access(member, "read", "alice"))

test_own_session_write_is_allowed if allowed(access(member, "write", "alice"))

test_own_session_stream_and_replay_are_allowed if {
	allowed(access(member, "stream", "alice"))
	allowed(access(member, "replay", "alice"))
}

test_another_users_session_is_denied if {
	denied(access(member, "read", "bob"))
	reason_has(access(member, "read", "bob"), "another user")
}

test_admin_may_read_any_session_of_the_tenant if allowed(access(admin, "read", "bob"))

test_admin_may_cancel_in_any_session if allowed(access(admin, "cancel", "bob"))

test_shared_session_is_allowed if allowed(access(member, "write", null))

test_other_tenants_session_is_denied_even_for_admin if {
	doc := object.union(access(admin, "read", "root"), {"request": {"operation": "read", "session": {"id": "s1", "tenant": "globex", "owner": "root"}}})
	denied(doc)
	reason_has(doc, "another tenant")
}

test_unknown_session_operation_is_denied if denied(access(admin, "delete", "root"))

test_session_access_of_suspended_tenant_is_denied if {
	denied(object.union(access(member, "read", "alice"), {"tenant": object.union(tenant, {"status": "suspended"})}))
}

# ---------------------------------------------------------------- tool.invoke

tool(name, extra) := {
	"action": "tool.invoke",
	"tenant": tenant,
	"subject": member,
	"request": object.union({"tool": {"name": name}, "argument_bytes": 20}, extra),
}

web(host, class) := tool("http_fetch", {"target": {"host": host, "address_class": class}})

test_calculator_is_allowed if allowed(tool("calculator", {}))

test_unknown_tool_is_denied if {
	denied(tool("rm_rf", {}))
	reason_has(tool("rm_rf", {}), "not in the standard plan")
}

test_python_in_sandbox_is_allowed if allowed(tool("python_exec", {"sandboxed": true}))

test_python_outside_sandbox_is_denied if {
	denied(tool("python_exec", {"sandboxed": false}))
	reason_has(tool("python_exec", {}), "only in the sandbox")
}

test_fetch_of_allowlisted_domain_is_allowed if allowed(web("example.com", "public"))

test_fetch_of_allowlisted_subdomain_is_allowed if allowed(web("en.wikipedia.org", "public"))

test_fetch_of_lookalike_domain_is_denied if denied(web("notexample.com", "public"))

test_fetch_of_other_domain_is_denied if {
	denied(web("evil.test", "public"))
	reason_has(web("evil.test", "public"), "not an allowlisted domain")
}

test_fetch_to_private_address_is_denied_even_when_allowlisted if {
	denied(web("example.com", "private"))
	reason_has(web("example.com", "private"), "private address")
}

test_fetch_to_loopback_is_denied if denied(web("example.com", "loopback"))

test_fetch_to_link_local_is_denied if denied(web("example.com", "link_local"))

test_oversized_arguments_are_denied if {
	doc := tool("calculator", {"argument_bytes": 65537})
	denied(doc)
	reason_has(doc, "65537 bytes")
}

test_arguments_at_the_limit_are_allowed if allowed(tool("calculator", {"argument_bytes": 65536}))

test_tool_outside_free_plan_is_denied if {
	denied(object.union(tool("python_exec", {"sandboxed": true}), {"tenant": object.union(tenant, {"plan": "free"})}))
}

test_enterprise_plan_allows_any_listed_kind if {
	allowed(object.union(tool("python_exec", {"sandboxed": true}), {"tenant": object.union(tenant, {"plan": "enterprise"})}))
}

test_role_without_the_tool_is_denied if {
	doc := object.union(tool("calculator", {}), {"subject": {"user": "g", "role": "guest"}})
	denied(doc)
	reason_has(doc, "role may not use")
}

test_enterprise_tool_of_unknown_kind_is_denied if {
	doc := object.union(tool("mystery", {}), {"tenant": object.union(tenant, {"plan": "enterprise"}), "subject": admin})
	denied(doc)
	reason_has(doc, "no known kind")
}

mcp(name, server, plan_name, subject) := object.union(
	tool(name, {"mcp": {"server": server, "tool": "lookup"}}),
	{"tenant": object.union(tenant, {"plan": plan_name}), "subject": subject},
)

test_mcp_tool_on_enterprise_is_allowed if allowed(mcp("facts__lookup", "facts", "enterprise", admin))

test_mcp_tool_outside_the_plan_is_denied if {
	doc := mcp("facts__lookup", "facts", "standard", admin)
	denied(doc)
	reason_has(doc, "not in the standard plan")
}

test_mcp_server_wildcard_lists_its_tools if {
	doc := mcp("facts__lookup", "facts", "enterprise", member)
	denied(doc)
	allowed(doc) with data.roles.member.tools as ["facts__*"]
	denied(mcp("other__lookup", "other", "enterprise", member)) with data.roles.member.tools as ["facts__*"]
}

test_mcp_name_without_a_server_is_of_unknown_kind if {
	doc := object.union(tool("facts__lookup", {}), {"tenant": object.union(tenant, {"plan": "enterprise"}), "subject": admin})
	reason_has(doc, "no known kind")
}

# ---------------------------------------------------------------- model.use

model(tier, name, plan_name) := {
	"action": "model.use",
	"tenant": object.union(tenant, {"plan": plan_name}),
	"subject": member,
	"request": {"tier": tier, "model": name, "provider": "simulation"},
}

test_medium_model_on_standard_is_allowed if allowed(model("medium", "sim-small", "standard"))

test_large_tier_on_free_is_denied if {
	denied(model("large", "sim-large", "free"))
	reason_has(model("large", "sim-large", "free"), "large tier")
}

test_small_tier_on_free_is_allowed if allowed(model("small", "sim-small", "free"))

test_unknown_tier_is_denied if denied(model("huge", "sim-large", "enterprise"))

test_model_of_unknown_plan_is_denied if denied(model("small", "sim-small", "gold"))

test_model_use_by_suspended_tenant_is_denied if {
	denied(object.union(model("small", "sim-small", "standard"), {"tenant": {"id": "acme", "status": "suspended", "plan": "standard"}}))
}
