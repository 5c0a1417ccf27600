-- Incidents: each harmful segment, live or from a job, kept for review (moderation/incidents.py).
CREATE TABLE incidents (
    id            uuid PRIMARY KEY,
    created_at    timestamptz NOT NULL DEFAULT now(),
    source        text NOT NULL CHECK (source IN ('live', 'job')),
    session_id    text,
    job_id        text,
    seq           integer NOT NULL,
    start_s       double precision NOT NULL,
    end_s         double precision NOT NULL,
    text          text NOT NULL,
    spans         jsonb NOT NULL,
    categories    text[] NOT NULL,
    severity      double precision NOT NULL,
    reasons       text[] NOT NULL,
    speaker_id    text,
    channel_id    text,
    metadata      jsonb NOT NULL DEFAULT '{}',
    clip_start_s  double precision,
    clip_end_s    double precision,
    status        text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'confirmed', 'dismissed')),
    category      text,
    decided_by    text,
    decided_at    timestamptz,
    note          text
);
CREATE INDEX incidents_by_time ON incidents (created_at DESC);
CREATE INDEX incidents_by_severity ON incidents (severity DESC, created_at DESC);
CREATE INDEX incidents_by_speaker ON incidents (speaker_id, created_at DESC);
CREATE INDEX incidents_by_status ON incidents (status, severity DESC);
