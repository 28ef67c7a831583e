"""Chain audit entries inside COMMIT (a deferred trigger), not from the client.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21

Why: appending from the client held the chain-head lock across four round
trips (lock the head, insert, move the head, commit); under load each round
trip also waits for a busy event loop, so every committing transaction queued
behind the lock and single-record ingest was bound by it. Now a transaction
stages its entries as one row of `audit_staging` (no lock), and a DEFERRABLE
INITIALLY DEFERRED constraint trigger chains them while the COMMIT runs: the
lock is held for the trigger's own work only, with no client round trip.

The hash material is the one `shared.audit.service.entry_hash` computes; the
Python implementation stays as the independent check that `verify` runs.
"""
from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Unlogged: a staging row lives only inside its own transaction (the trigger
    # deletes it before the commit completes), so it never needs crash recovery.
    op.execute(
        "CREATE UNLOGGED TABLE audit_staging ("
        " xid xid8 PRIMARY KEY DEFAULT pg_current_xact_id(),"
        " entries jsonb NOT NULL)"
    )
    op.execute(
        r"""
        CREATE FUNCTION audit_seal() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            head_seq bigint;
            head_hash text;
            e jsonb;
            at_value timestamptz;
            digest text;
            v_seq bigint[] := '{}';
            v_at timestamptz[] := '{}';
            v_actor text[] := '{}';
            v_action text[] := '{}';
            v_task uuid[] := '{}';
            v_case uuid[] := '{}';
            v_region text[] := '{}';
            v_body text[] := '{}';
            v_prev text[] := '{}';
            v_hash text[] := '{}';
        BEGIN
            SELECT seq, hash INTO head_seq, head_hash FROM audit_chain_head WHERE id = 1 FOR UPDATE;
            FOR e IN SELECT el FROM jsonb_array_elements(NEW.entries) WITH ORDINALITY AS t(el, n) ORDER BY n LOOP
                head_seq := head_seq + 1;
                at_value := (e->>'at')::timestamptz;
                -- The same fields, in the same order and format, as entry_hash() in Python.
                digest := encode(sha256(convert_to(concat_ws(E'\x1f',
                    head_seq::text,
                    to_char(at_value AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') || '+00:00',
                    e->>'actor',
                    e->>'action',
                    coalesce(e->>'task_id', ''),
                    coalesce(e->>'case_id', ''),
                    coalesce(e->>'region_code', ''),
                    e->>'body',
                    head_hash), 'UTF8')), 'hex');
                v_seq := v_seq || head_seq;
                v_at := v_at || at_value;
                v_actor := v_actor || (e->>'actor');
                v_action := v_action || (e->>'action');
                v_task := v_task || (e->>'task_id')::uuid;
                v_case := v_case || (e->>'case_id')::uuid;
                v_region := v_region || (e->>'region_code');
                v_body := v_body || (e->>'body');
                v_prev := v_prev || head_hash;
                v_hash := v_hash || digest;
                head_hash := digest;
            END LOOP;
            INSERT INTO audit_log (seq, at, actor, action, task_id, case_id, region_code, body, prev_hash, hash)
                SELECT * FROM unnest(v_seq, v_at, v_actor, v_action, v_task, v_case, v_region, v_body, v_prev, v_hash);
            UPDATE audit_chain_head SET seq = head_seq, hash = head_hash WHERE id = 1;
            DELETE FROM audit_staging WHERE xid = NEW.xid;
            RETURN NULL;
        END $$;
        """
    )
    op.execute(
        "CREATE CONSTRAINT TRIGGER audit_seal AFTER INSERT ON audit_staging"
        " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION audit_seal()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS audit_seal ON audit_staging")
    op.execute("DROP FUNCTION IF EXISTS audit_seal()")
    op.execute("DROP TABLE IF EXISTS audit_staging")
