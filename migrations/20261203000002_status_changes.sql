-- Every status a deployment entered, in order: written by a trigger in the same
-- statement as the change itself, so no transition is ever missing from the history.
-- The event stream (/api/events) replays it after a reconnect (Last-Event-ID).
CREATE TABLE status_changes (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id   INTEGER NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    status          TEXT    NOT NULL,
    at              INTEGER NOT NULL
);

CREATE INDEX status_changes_deployment ON status_changes (deployment_id);

CREATE TRIGGER deployments_status_inserted AFTER INSERT ON deployments
BEGIN
    INSERT INTO status_changes (deployment_id, status, at)
    VALUES (NEW.id, NEW.status, CAST(unixepoch('subsec') * 1000 AS INTEGER));
END;

CREATE TRIGGER deployments_status_updated AFTER UPDATE OF status ON deployments
WHEN NEW.status IS NOT OLD.status
BEGIN
    INSERT INTO status_changes (deployment_id, status, at)
    VALUES (NEW.id, NEW.status, CAST(unixepoch('subsec') * 1000 AS INTEGER));
END;
