-- The local server database layout of version 6 (an index of events by sub-series and
-- value), as it was before sub-series were summarized in blocks of steps.

CREATE TABLE IF NOT EXISTS organizations (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS folders (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL,
    parent_id TEXT,
    name TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS folders_sibling_name
    ON folders (org_id, ifnull(parent_id, ''), name);
CREATE TABLE IF NOT EXISTS experiments (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL,
    folder_id TEXT,
    slug TEXT NOT NULL,
    description TEXT NOT NULL,
    metadata_json TEXT NOT NULL,
    status TEXT NOT NULL,
    error_name TEXT,
    error_detail TEXT,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    started_at_ms INTEGER,
    done_at_ms INTEGER,
    last_heartbeat_at_ms INTEGER,
    last_event_at_ms INTEGER,
    UNIQUE (org_id, slug)
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    experiment_seq INTEGER NOT NULL,
    client_event_id TEXT NOT NULL,
    metric_name TEXT NOT NULL,
    metric_value REAL NOT NULL,
    step INTEGER,
    metadata_json TEXT NOT NULL,
    client_timestamp_ms INTEGER NOT NULL,
    server_timestamp_ms INTEGER NOT NULL,
    UNIQUE (experiment_seq, client_event_id)
);
CREATE INDEX IF NOT EXISTS events_by_metric_step
    ON events (experiment_seq, metric_name, step, client_timestamp_ms);
CREATE INDEX IF NOT EXISTS events_by_metric_time
    ON events (experiment_seq, metric_name, client_timestamp_ms);
CREATE INDEX IF NOT EXISTS events_by_step
    ON events (experiment_seq, step, client_timestamp_ms);
CREATE INDEX IF NOT EXISTS events_by_time ON events (experiment_seq, client_timestamp_ms);
CREATE INDEX IF NOT EXISTS events_by_series
    ON events (experiment_seq, metric_name, metadata_json, metric_value)
    WHERE metric_value IS NOT NULL;
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS annotations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL,
    experiment_id TEXT NOT NULL,
    annotation TEXT NOT NULL,
    metadata_json TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS annotations_by_experiment ON annotations (experiment_id, created_at_ms);
CREATE INDEX IF NOT EXISTS experiments_by_creation ON experiments (org_id, created_at_ms);
CREATE TABLE IF NOT EXISTS ingestion_keys (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL,
    experiment_id TEXT NOT NULL,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER,
    last_used_at_ms INTEGER
);
CREATE TABLE IF NOT EXISTS idempotency (
    credential TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL,
    body BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (credential, key)
);
CREATE TABLE IF NOT EXISTS dashboard_logins (
    kind TEXT NOT NULL,
    digest TEXT NOT NULL,
    org_id TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    PRIMARY KEY (kind, digest)
);
CREATE INDEX IF NOT EXISTS dashboard_logins_by_org
    ON dashboard_logins (kind, org_id, expires_at_ms);
PRAGMA user_version = 6;
