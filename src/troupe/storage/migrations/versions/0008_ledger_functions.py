"""PostgreSQL: the budget ledger's reserve and settle as functions (one round trip each)

The logic is the one of ``storage/ledger.py`` (SQLite runs it from Python): a repeated
key gets its first grant; stale reservations of the task (dead attempts) are released;
counters are made or their limits refreshed, and locked, in id order; the longest
answer that fits every budget in tokens and in micro-dollars is granted, or the short
budget is reported (``short_id``; ``!task`` when the task does not exist); the grant is
held on every counter at once. Settling deletes the reservation (so it happens once)
and moves what it held from reserved to used. Nothing on SQLite.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 18:20:00
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

SETTLE = """
CREATE OR REPLACE FUNCTION troupe_settle(p_key text, p_task text, p_tokens bigint, p_usd bigint)
RETURNS TABLE (id text, used_tokens bigint, used_micro_usd bigint, limit_tokens bigint,
               limit_micro_usd bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_tokens bigint;
  v_usd bigint;
  v_ids text[];
BEGIN
  DELETE FROM budget_reservations r WHERE r.call_key = p_key AND r.task_id = p_task
    RETURNING r.tokens, r.micro_usd, ARRAY(SELECT json_array_elements_text(r.counters::json))
    INTO v_tokens, v_usd, v_ids;
  IF NOT FOUND THEN
    RETURN;
  END IF;
  PERFORM 1 FROM budget_counters c WHERE c.id = ANY(v_ids) ORDER BY c.id FOR UPDATE;
  RETURN QUERY
    UPDATE budget_counters c
       SET reserved_tokens = c.reserved_tokens - v_tokens,
           reserved_micro_usd = c.reserved_micro_usd - v_usd,
           used_tokens = c.used_tokens + p_tokens,
           used_micro_usd = c.used_micro_usd + p_usd
     WHERE c.id = ANY(v_ids)
    RETURNING c.id::text, c.used_tokens, c.used_micro_usd, c.limit_tokens, c.limit_micro_usd;
END;
$$;
"""

RESERVE = """
CREATE OR REPLACE FUNCTION troupe_reserve(
  p_key text, p_task text, p_tenant text, p_ids text[], p_limit_tokens bigint[],
  p_limit_usd bigint[], p_prompt bigint, p_answer bigint, p_min_answer bigint,
  p_input_price bigint, p_output_price bigint, p_stale text)
RETURNS TABLE (answer bigint, tokens bigint, micro_usd bigint, short_id text,
               room_tokens bigint, room_micro_usd bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  c record;
  v_answer bigint := p_answer;
  v_fits bigint;
  v_room_tokens bigint;
  v_room_usd bigint;
  v_short text;
  v_short_tokens bigint;
  v_short_usd bigint;
  v_tokens bigint;
  v_usd bigint;
BEGIN
  RETURN QUERY SELECT r.answer_tokens::bigint, r.tokens::bigint, r.micro_usd, NULL::text,
                      NULL::bigint, NULL::bigint
                 FROM budget_reservations r WHERE r.call_key = p_key;
  IF FOUND THEN
    RETURN;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = p_task AND t.tenant_id = p_tenant) THEN
    RETURN QUERY SELECT 0::bigint, NULL::bigint, NULL::bigint, '!task'::text, NULL::bigint,
                        NULL::bigint;
    RETURN;
  END IF;
  IF p_stale IS NOT NULL THEN
    FOR c IN SELECT r.call_key FROM budget_reservations r
              WHERE r.task_id = p_task AND r.tenant_id = p_tenant
                AND starts_with(r.call_key, p_stale)
    LOOP
      PERFORM troupe_settle(c.call_key, p_task, 0, 0);
    END LOOP;
  END IF;
  INSERT INTO budget_counters AS b (id, tenant_id, limit_tokens, limit_micro_usd, used_tokens,
                                    reserved_tokens, used_micro_usd, reserved_micro_usd)
    SELECT u.id, p_tenant, u.lt, u.lu, 0, 0, 0, 0
      FROM unnest(p_ids, p_limit_tokens, p_limit_usd) AS u(id, lt, lu)
     ORDER BY u.id
  ON CONFLICT ON CONSTRAINT pk_budget_counters DO UPDATE
     SET limit_tokens = excluded.limit_tokens, limit_micro_usd = excluded.limit_micro_usd;
  FOR c IN SELECT b.id, b.limit_tokens, b.limit_micro_usd, b.used_tokens, b.reserved_tokens,
                  b.used_micro_usd, b.reserved_micro_usd
             FROM budget_counters b WHERE b.id = ANY(p_ids) ORDER BY b.id
  LOOP
    v_fits := p_answer;
    v_room_tokens := NULL;
    v_room_usd := NULL;
    IF c.limit_tokens IS NOT NULL THEN
      v_room_tokens := c.limit_tokens - c.used_tokens - c.reserved_tokens;
      v_fits := least(v_fits, v_room_tokens - p_prompt);
    END IF;
    IF c.limit_micro_usd IS NOT NULL THEN
      v_room_usd := c.limit_micro_usd - c.used_micro_usd - c.reserved_micro_usd;
      IF p_output_price > 0 THEN
        v_fits := least(v_fits, floor((v_room_usd * 1000000.0 - p_prompt * p_input_price)
                                      / p_output_price)::bigint);
      ELSIF ceil(p_prompt * p_input_price / 1000000.0) > v_room_usd THEN
        v_fits := -1;
      END IF;
    END IF;
    IF v_fits < v_answer THEN
      v_answer := v_fits;
      v_short := c.id;
      v_short_tokens := v_room_tokens;
      v_short_usd := v_room_usd;
    END IF;
  END LOOP;
  IF v_answer < p_min_answer THEN
    RETURN QUERY SELECT v_answer, NULL::bigint, NULL::bigint, v_short, v_short_tokens,
                        v_short_usd;
    RETURN;
  END IF;
  v_tokens := p_prompt + v_answer;
  v_usd := ceil((p_prompt * p_input_price + v_answer * p_output_price) / 1000000.0)::bigint;
  UPDATE budget_counters b
     SET reserved_tokens = b.reserved_tokens + v_tokens,
         reserved_micro_usd = b.reserved_micro_usd + v_usd
   WHERE b.id = ANY(p_ids);
  INSERT INTO budget_reservations (call_key, task_id, tenant_id, tokens, micro_usd,
                                   answer_tokens, counters, created_at)
       VALUES (p_key, p_task, p_tenant, v_tokens, v_usd, v_answer, to_json(p_ids)::text, now());
  RETURN QUERY SELECT v_answer, v_tokens, v_usd, NULL::text, NULL::bigint, NULL::bigint;
END;
$$;
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(SETTLE)
    op.execute(RESERVE)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "DROP FUNCTION IF EXISTS troupe_reserve(text, text, text, text[], bigint[], bigint[], "
        "bigint, bigint, bigint, bigint, bigint, text)"
    )
    op.execute("DROP FUNCTION IF EXISTS troupe_settle(text, text, bigint, bigint)")
