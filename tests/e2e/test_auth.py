"""Authentication through a real `troupe serve`: keys and JWTs, each refusal with its own
code, per-key and per-tenant limits, and no credential ever in the log."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import jwt
import pytest

from tests.e2e.conftest import JWT_SECRET
from tests.e2e.processes import TroupeProcess, new_tenant_key, operator
from troupe.client import TroupeAPIError, TroupeClient

pytestmark = pytest.mark.e2e

TASKS = "/api/v1/tasks"


def _token(**claims: Any) -> str:
    base = {"exp": int(time.time()) + 300, "aud": "troupe-tests"}
    return jwt.encode({**base, **claims}, JWT_SECRET, algorithm="HS256")


def _get(served: TroupeProcess, credential: str | None, path: str = TASKS) -> httpx.Response:
    headers = {"Authorization": credential} if credential is not None else {}
    return httpx.get(served.url + path, headers=headers, timeout=10)


def test_every_refusal_is_a_401_with_its_own_code(served: TroupeProcess) -> None:
    revoked = new_tenant_key(served, "auth-codes")
    listed = operator(served, "key", "list", "--tenant", "auth-codes", "--json")
    assert listed.returncode == 0, listed.stderr
    (key,) = json.loads(listed.stdout)
    assert operator(served, "key", "revoke", key["id"]).returncode == 0
    expired = new_tenant_key(served, "auth-codes", key_options=("--expires-in-days", "0"))
    other_secret = _token(tenant="auth-codes")[:-6] + "AAAAAA"
    cases = {
        None: "auth_required",
        "": "auth_required",
        "Token abc": "auth_malformed",
        "Bearer": "auth_malformed",
        "Bearer trp_0123": "auth_malformed",
        "Bearer trp_0123456789ab_" + "A" * 43: "auth_invalid",
        f"Bearer {revoked}": "auth_revoked",
        f"Bearer {expired}": "auth_expired",
        f"Bearer {_token(tenant='auth-codes', exp=int(time.time()) - 600)}": "auth_expired",
        f"Bearer {other_secret}": "auth_invalid",
        f"Bearer {_token(tenant='no-such-tenant')}": "auth_invalid",
        f"Bearer {_token(tenant='auth-codes', aud='someone-else')}": "auth_invalid",
    }
    for credential, code in cases.items():
        response = _get(served, credential)
        assert response.status_code == 401, (credential, response.text)
        assert response.json()["error"]["code"] == code, credential
        assert response.headers["www-authenticate"] == "Bearer"
    # Probes and metrics stay open to the infrastructure that scrapes them.
    for path in ("/healthz", "/readyz", "/metrics"):
        assert _get(served, None, path).status_code == 200


def test_a_jwt_acts_for_the_tenant_it_names(served: TroupeProcess) -> None:
    new_tenant_key(served, "jwt-tenant")
    token = _token(tenant="jwt-tenant", sub="carol", roles=["member"])
    with TroupeClient(served.url, api_key=token) as client:
        task = client.wait(client.submit_task("Who am I?").id)
        listed = client.list_tasks().items
    assert task.status == "completed"
    assert [t.id for t in listed] == [task.id]


def test_a_suspended_tenant_is_refused_until_reactivated(served: TroupeProcess) -> None:
    key = new_tenant_key(served, "suspendable")
    assert _get(served, f"Bearer {key}").status_code == 200
    assert (
        operator(served, "tenant", "update", "suspendable", "--status", "suspended").returncode == 0
    )
    refused = _get(served, f"Bearer {key}")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "tenant_suspended"
    reactivate = operator(served, "tenant", "update", "suspendable", "--status", "active")
    assert reactivate.returncode == 0, reactivate.stderr
    assert _get(served, f"Bearer {key}").status_code == 200


def test_a_keys_own_rate_limit_leaves_the_tenants_other_keys_alone(
    served: TroupeProcess,
) -> None:
    slow = new_tenant_key(served, "rated", key_options=("--requests-per-s", "0.1", "--burst", "2"))
    other = new_tenant_key(served, "rated")
    answers = [_get(served, f"Bearer {slow}").status_code for _ in range(3)]
    over = _get(served, f"Bearer {slow}")
    assert answers == [200, 200, 429]
    assert over.json()["error"]["code"] == "rate_limited"
    assert "this API key" in over.json()["error"]["message"]
    assert int(over.headers["retry-after"]) >= 1
    assert _get(served, f"Bearer {other}").status_code == 200


def test_a_keys_concurrency_cap_counts_only_its_own_tasks(served: TroupeProcess) -> None:
    capped = new_tenant_key(served, "capped", key_options=("--max-concurrent-tasks", "1"))
    free = new_tenant_key(served, "capped")
    with TroupeClient(served.url, api_key=capped) as client:
        waiting = client.submit_task("hold on", strategy="dag", require_approval=True)
        with pytest.raises(TroupeAPIError) as refused:
            client.submit_task("one more")
        with TroupeClient(served.url, api_key=free) as other:
            assert other.wait(other.submit_task("mine").id).status == "completed"
        client.reject_task(waiting.id, reason="test over")
        assert client.wait(waiting.id).status == "rejected"
        assert client.wait(client.submit_task("now there is room").id).status == "completed"
    assert (refused.value.status, refused.value.code) == (429, "too_many_tasks")
    assert "API key" in refused.value.message


def test_a_tenants_own_caps_replace_the_configured_ones(served: TroupeProcess) -> None:
    key = new_tenant_key(served, "small-plan", "--max-task-tokens", "3000", "--daily-tokens", "60")
    with TroupeClient(served.url, api_key=key) as client:
        budgets = client.budgets()
        with pytest.raises(TroupeAPIError) as too_big:
            client.submit_task("x", token_budget=3001)
        first = client.wait(client.submit_task("What is 2+2?", strategy="simple").id)
        with pytest.raises(TroupeAPIError) as exhausted:
            client.submit_task("And 3+3?", strategy="simple")
    assert budgets.task.max_token_budget == 3000
    assert budgets.task.default_token_budget == 3000
    assert budgets.tenant_daily.limit_tokens == 60
    assert (too_big.value.status, too_big.value.code) == (422, "budget_too_large")
    assert first.usage.total_tokens == 60  # cut to what the tenant's day had
    assert (exhausted.value.status, exhausted.value.code) == (429, "budget_exhausted")


def test_no_credential_ever_reaches_the_log(served: TroupeProcess) -> None:
    key = new_tenant_key(served, "logged")
    bad = "trp_0123456789ab_" + "Z" * 43
    token = _token(tenant="logged")
    for credential in (key, bad, token, key[:-1] + "x"):
        _get(served, f"Bearer {credential}")
        httpx.post(
            served.url + TASKS,
            headers={"Authorization": f"Bearer {credential}"},
            content=b"{broken",
            timeout=10,
        )
    log = served.output()
    for credential in (key, bad, token, key.split("_", 2)[2], JWT_SECRET):
        assert credential not in log
    # The one exception is by design: the embedded dev key, printed once at start.
    assert log.count(served.api_key) == 1
