"""A keyed audit chain (HMAC under SHOUHU_AUDIT_KEY) and a head that only moves forward.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-10

Issue 11: with an unkeyed SHA-256 chain whoever reaches the database could
recompute every hash after an edit, or delete the tail and move the head
back, and verify still said ok; rows written past the head were ignored by
verify but made every later commit fail on the primary key.

- audit_hmac(material): HMAC-SHA-256 with the key the connection carries
  (shared/audit/keys.py: sent at connection start, never stored here); an
  error if the connection has none, so an entry is never sealed unkeyed.
- audit_seal(), the commit-time trigger of 0002, now hashes with audit_hmac,
  signs the head (seq, hash, keyed_from), and numbers new entries after any
  row written past the head instead of colliding with it (verify reports such
  rows). SECURITY DEFINER: it writes the log and the head as their owner, so
  the services' role needs no write access to either (shared/db_roles.py).
- audit_chain_head gets `mac` (its signature) and `keyed_from` (the first
  entry hashed with the key), and a trigger: no INSERT, DELETE or TRUNCATE,
  and an UPDATE only moves forward, to an entry that exists with that hash,
  and never moves `keyed_from`.

The entries already written keep their SHA-256 hashes (rewriting them under
the key would need the trigger switched off and would vouch for whatever the
table held, unchecked). Instead this migration appends one keyed marker entry,
`audit.chain_keyed`, naming how many unkeyed entries precede it and the last
one's hash: its HMAC covers that hash, so the unkeyed part is anchored by the
key from now on, and verify checks entries before `keyed_from` with SHA-256
and the rest with the HMAC. On an empty chain there is nothing to anchor:
`keyed_from` is 1 and only the head is signed.

The migration therefore needs the key: `shouhu migrate` and `shouhu up`
connect with it (SHOUHU_AUDIT_KEY; in development one kept in .shouhu/audit.key).
"""
from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_HMAC = r"""
CREATE FUNCTION audit_hmac(material text) RETURNS text LANGUAGE plpgsql STABLE AS $$
DECLARE
    k bytea;
BEGIN
    -- The key's two padded blocks (K xor ipad, K xor opad), set by the client at connection start.
    k := decode(nullif(current_setting('shouhu.audit_key', true), ''), 'hex');
    IF k IS NULL OR length(k) <> 128 THEN
        RAISE EXCEPTION 'no audit key on this connection: connect with SHOUHU_AUDIT_KEY set (shared/audit/keys.py)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN encode(sha256(substring(k FROM 65 FOR 64)
                         || sha256(substring(k FROM 1 FOR 64) || convert_to(material, 'UTF8'))), 'hex');
END $$;
"""

_SEAL = r"""
CREATE OR REPLACE FUNCTION audit_seal() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    head_seq bigint;
    head_hash text;
    keyed bigint;
    past bigint;
    k bytea;
    k_inner bytea;
    k_outer bytea;
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
    SELECT seq, hash, keyed_from INTO head_seq, head_hash, keyed FROM audit_chain_head WHERE id = 1 FOR UPDATE;
    IF keyed IS NULL THEN
        RAISE EXCEPTION 'audit_chain_head has no keyed_from: migration 0015 did not finish';
    END IF;
    -- Rows written past the head (around this trigger) must not block every later commit on the primary
    -- key: number after them, linking to the real head; verify reports them as not part of the chain.
    SELECT max(seq) INTO past FROM audit_log;
    -- The key's padded blocks, read once per commit (audit_hmac() below checks it is there).
    PERFORM audit_hmac('');
    k := decode(current_setting('shouhu.audit_key'), 'hex');
    k_inner := substring(k FROM 1 FOR 64);
    k_outer := substring(k FROM 65 FOR 64);
    FOR e IN SELECT el FROM jsonb_array_elements(NEW.entries) WITH ORDINALITY AS t(el, n) ORDER BY n LOOP
        head_seq := greatest(head_seq, past) + 1;
        past := NULL;
        at_value := (e->>'at')::timestamptz;
        -- HMAC (as audit_hmac) over the same fields, in the same order and format, as entry_hash() in Python.
        digest := encode(sha256(k_outer || sha256(k_inner || convert_to(concat_ws(E'\x1f',
            head_seq::text,
            to_char(at_value AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') || '+00:00',
            e->>'actor',
            e->>'action',
            coalesce(e->>'task_id', ''),
            coalesce(e->>'case_id', ''),
            coalesce(e->>'region_code', ''),
            e->>'body',
            head_hash), 'UTF8'))), 'hex');
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
    -- The head's signature (shared.audit.keys.head_signature): cutting the tail needs the key.
    UPDATE audit_chain_head SET seq = head_seq, hash = head_hash,
        mac = audit_hmac(concat_ws(E'\x1f', 'head', head_seq::text, head_hash, keyed::text))
        WHERE id = 1;
    DELETE FROM audit_staging WHERE xid = NEW.xid;
    RETURN NULL;
END $$;
"""

_HEAD_GUARD = r"""
CREATE FUNCTION audit_head_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE' THEN
        RAISE EXCEPTION 'audit_chain_head: % refused (one row, moved only by the sealing trigger)', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.id <> OLD.id OR NEW.seq < OLD.seq OR NEW.keyed_from IS DISTINCT FROM OLD.keyed_from THEN
        RAISE EXCEPTION 'audit_chain_head only moves forward (from % to % refused)', OLD.seq, NEW.seq
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.seq > 0 AND NOT EXISTS (SELECT 1 FROM audit_log WHERE seq = NEW.seq AND hash = NEW.hash) THEN
        RAISE EXCEPTION 'audit_chain_head must point at an entry of the log (% refused)', NEW.seq
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
"""

# audit_seal as migration 0002 made it (for downgrade).
_SEAL_0002 = r"""
CREATE OR REPLACE FUNCTION audit_seal() RETURNS trigger LANGUAGE plpgsql SECURITY INVOKER AS $$
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


def upgrade() -> None:
    op.add_column("audit_chain_head", sa.Column("mac", sa.String(length=64), nullable=True))
    op.add_column("audit_chain_head", sa.Column("keyed_from", sa.BigInteger(), nullable=True))
    op.execute(_HMAC)
    op.execute(_SEAL)
    bind = op.get_bind()
    head_seq, head_hash = bind.execute(sa.text("SELECT seq, hash FROM audit_chain_head WHERE id = 1")).one()
    # Fails here, with audit_hmac's message, when the migrating connection has no key.
    bind.execute(sa.text(
        "UPDATE audit_chain_head SET keyed_from = seq + 1,"
        " mac = audit_hmac(concat_ws(E'\\x1f', 'head', seq::text, hash, (seq + 1)::text)) WHERE id = 1"))
    if head_seq > 0:
        # The marker: sealed (keyed) by audit_seal when this migration's transaction commits.
        body = json.dumps({"algorithm": "hmac-sha256", "last_unkeyed_hash": head_hash,
                           "unkeyed_entries": head_seq,
                           "why": "from this entry on every hash is an HMAC under SHOUHU_AUDIT_KEY"},
                          sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        bind.execute(sa.text(
            "INSERT INTO audit_staging (entries) VALUES (jsonb_build_array(jsonb_build_object("
            "'at', now(), 'actor', 'system:migrate', 'action', 'audit.chain_keyed', 'task_id', NULL,"
            " 'case_id', NULL, 'region_code', NULL, 'body', CAST(:body AS text))))"), {"body": body})
    op.execute(_HEAD_GUARD)
    op.execute("CREATE TRIGGER audit_chain_head_guard BEFORE INSERT OR UPDATE OR DELETE ON audit_chain_head"
               " FOR EACH ROW EXECUTE FUNCTION audit_head_guard()")
    op.execute("CREATE TRIGGER audit_chain_head_no_truncate BEFORE TRUNCATE ON audit_chain_head"
               " FOR EACH STATEMENT EXECUTE FUNCTION audit_head_guard()")


def downgrade() -> None:
    # Entries sealed with the key stay keyed: the version-1 check reports them as changed.
    op.execute("DROP TRIGGER IF EXISTS audit_chain_head_no_truncate ON audit_chain_head")
    op.execute("DROP TRIGGER IF EXISTS audit_chain_head_guard ON audit_chain_head")
    op.execute("DROP FUNCTION IF EXISTS audit_head_guard()")
    op.execute(_SEAL_0002)
    op.execute("DROP FUNCTION IF EXISTS audit_hmac(text)")
    op.drop_column("audit_chain_head", "keyed_from")
    op.drop_column("audit_chain_head", "mac")
