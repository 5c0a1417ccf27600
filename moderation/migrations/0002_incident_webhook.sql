-- The incident webhook (moderation/webhook.py): incidents to deliver are marked when written and
-- claimed by an edge (FOR UPDATE SKIP LOCKED), so every one is sent, also across restarts.
ALTER TABLE incidents
    ADD COLUMN webhook_state    text CHECK (webhook_state IN ('pending', 'sent', 'failed')),
    ADD COLUMN webhook_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN webhook_due_at   timestamptz;
CREATE INDEX incidents_webhook_due ON incidents (webhook_due_at) WHERE webhook_state = 'pending';
