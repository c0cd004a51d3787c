# Troupe's authorization policy: one decision document per action.
#
#   data.troupe.authz.decision == {"allow": bool, "reason": string, "require_approval": bool}
#
# Default deny. Every limit, list and threshold lives in data.json (plans, roles,
# allowlists), none in these rules. The input schema is in docs/policies.md.
package troupe.authz

default decision := {"allow": false, "reason": "no rule allows this action", "require_approval": false}

decision := task_submit if input.action == "task.submit"

decision := session_access if input.action == "session.access"

decision := tool_invoke if input.action == "tool.invoke"

decision := model_use if input.action == "model.use"

deny(reason) := {"allow": false, "reason": reason, "require_approval": false}

permit(reason) := {"allow": true, "reason": reason, "require_approval": false}

permit_after_approval(reason) := {"allow": true, "reason": reason, "require_approval": true}

plan := data.plans[input.tenant.plan]

active if input.tenant.status == "active"

listed(item, items) if "*" in items

listed(item, items) if item in items

# "<server>__*" lists every tool of an MCP server.
listed(item, items) if {
	some pattern in items
	endswith(pattern, "__*")
	startswith(item, trim_suffix(pattern, "*"))
}

# ---------------------------------------------------------------- task.submit

task_submit := deny("the tenant is not active") if {
	not active
} else := deny(sprintf("the tenant's plan '%s' is unknown", [input.tenant.plan])) if {
	not plan
} else := deny(sprintf("strategy '%s' is not in the %s plan", [input.request.strategy, input.tenant.plan])) if {
	not input.request.strategy in plan.strategies
} else := deny(sprintf("token_budget %d is above the %s plan's %d", [input.request.token_budget, input.tenant.plan, plan.max_token_budget])) if {
	input.request.token_budget > plan.max_token_budget
} else := deny(sprintf("the plan uses tools the %s plan does not allow: %v", [input.request.plan.tools, input.tenant.plan])) if {
	some tool in object.get(input.request, ["plan", "tools"], [])
	not listed(tool, plan.tools)
} else := permit_after_approval(approval_reason) if {
	approval_reason
} else := permit("within the tenant's plan")

approval_reason := sprintf("the plan has %d agents in parallel, above %d", [input.request.plan.width, data.approval.max_plan_width]) if {
	input.request.plan.width > data.approval.max_plan_width
} else := sprintf("token_budget %d is above %d", [input.request.token_budget, data.approval.token_budget_above]) if {
	input.request.token_budget > data.approval.token_budget_above
} else := sprintf("the plan uses a sensitive tool (%s)", [tool]) if {
	some tool in object.get(input.request, ["plan", "tools"], [])
	tool in data.approval.sensitive_tools
} else := "the request asked for approval" if {
	input.request.require_approval == true
}

# ---------------------------------------------------------------- session.access

session_access := deny("the tenant is not active") if {
	not active
} else := deny("the session belongs to another tenant") if {
	input.request.session.tenant != input.tenant.id
} else := deny(sprintf("operation '%s' on a session is unknown", [input.request.operation])) if {
	not input.request.operation in data.session_operations
} else := permit("an admin may access every session of the tenant") if {
	input.subject.role == "admin"
} else := permit("the session is shared within the tenant") if {
	input.request.session.owner == null
} else := permit("the user's own session") if {
	input.request.session.owner == input.subject.user
} else := deny("the session belongs to another user of the tenant")

# ---------------------------------------------------------------- tool.invoke

tool_name := input.request.tool.name

# An MCP server's tool (its server and name come with the request).
tool_kind := "mcp" if {
	input.request.mcp.server
} else := object.get(data.tool_kinds, tool_name, "unknown")

tool_invoke := deny("the tenant is not active") if {
	not active
} else := deny(sprintf("the tenant's plan '%s' is unknown", [input.tenant.plan])) if {
	not plan
} else := deny(sprintf("tool '%s' is not in the %s plan", [tool_name, input.tenant.plan])) if {
	not listed(tool_name, plan.tools)
} else := deny(sprintf("the %s role may not use tool '%s'", [input.subject.role, tool_name])) if {
	not listed(tool_name, object.get(data.roles, [input.subject.role, "tools"], []))
} else := deny(sprintf("tool '%s' has no known kind", [tool_name])) if {
	tool_kind == "unknown"
} else := deny("code runs only in the sandbox") if {
	tool_kind == "code"
	not input.request.sandboxed == true
} else := deny(sprintf("network access to a %s address is never allowed", [input.request.target.address_class])) if {
	tool_kind == "network"
	input.request.target.address_class != "public"
} else := deny(sprintf("'%s' is not an allowlisted domain", [input.request.target.host])) if {
	tool_kind == "network"
	not domain_allowed(input.request.target.host)
} else := deny(sprintf("the arguments have %d bytes, above %d", [input.request.argument_bytes, data.limits.max_tool_argument_bytes])) if {
	input.request.argument_bytes > data.limits.max_tool_argument_bytes
} else := permit(sprintf("tool '%s' is allowed", [tool_name]))

domain_allowed(host) if host in data.network.allowed_domains

domain_allowed(host) if {
	some domain in data.network.allowed_domains
	endswith(host, concat("", [".", domain]))
}

# ---------------------------------------------------------------- model.use

model_use := deny("the tenant is not active") if {
	not active
} else := deny(sprintf("the tenant's plan '%s' is unknown", [input.tenant.plan])) if {
	not plan
} else := deny(sprintf("the %s tier is not in the %s plan", [input.request.tier, input.tenant.plan])) if {
	not input.request.tier in plan.tiers
} else := deny(sprintf("model '%s' is not in the %s plan", [input.request.model, input.tenant.plan])) if {
	not listed(input.request.model, plan.models)
} else := permit(sprintf("model '%s' on the %s tier is allowed", [input.request.model, input.request.tier]))
