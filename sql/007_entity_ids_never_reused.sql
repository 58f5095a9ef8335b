-- memfts schema v7: an entity id is never given twice.
-- memfts:foreign-keys-off (the runner turns foreign keys off around this file, and checks
-- before committing that the rebuild left no row without its entity that had one before)
--
-- Without AUTOINCREMENT, SQLite gives a new row the highest id + 1, so deleting the newest
-- entity and creating another reused its id. An observation's id is its entity's id << 20
-- plus its position (001): observations left behind by a tool that deleted an entity with
-- foreign keys off (the sqlite3 shell's default) then belonged to the next entity created.
-- With AUTOINCREMENT, SQLite records the highest id ever given (sqlite_sequence) and never
-- goes back below it, whichever program inserts.
--
-- The table is rebuilt as SQLite's documentation describes (ALTER TABLE cannot add
-- AUTOINCREMENT): new table, copy, drop, rename, then its index and triggers again (those of
-- 001 and 006). The rows keep their ids, so the full-text index (external content, by rowid)
-- and the vectors (by entity id) stay as they are.

CREATE TABLE entities_new (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL UNIQUE,
    entity_type TEXT NOT NULL,
    -- microseconds since the epoch of the last change to the entity or its observations;
    -- an empty search lists the most recently changed entities first
    updated_at  INTEGER NOT NULL DEFAULT 0
);
INSERT INTO entities_new(id, name, entity_type, updated_at)
    SELECT id, name, entity_type, updated_at FROM entities;

-- The highest id given so far, as far as the file can tell: an orphaned observation's id
-- range counts too, so that no new entity lands on it.
INSERT INTO sqlite_sequence(name, seq)
    SELECT 'entities_new', 0
     WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'entities_new');
UPDATE sqlite_sequence
   SET seq = max(seq,
                 coalesce((SELECT max(id) FROM entities), 0),
                 coalesce((SELECT max(id) >> 20 FROM observations), 0))
 WHERE name = 'entities_new';

DROP TABLE entities;
ALTER TABLE entities_new RENAME TO entities;

CREATE INDEX entities_updated_at ON entities(updated_at);

CREATE TRIGGER entities_ai AFTER INSERT ON entities BEGIN
    INSERT INTO entities_fts(rowid, name, entity_type) VALUES (new.id, new.name, new.entity_type);
END;
CREATE TRIGGER entities_ad AFTER DELETE ON entities BEGIN
    INSERT INTO entities_fts(entities_fts, rowid, name, entity_type)
        VALUES ('delete', old.id, old.name, old.entity_type);
END;
CREATE TRIGGER entities_au AFTER UPDATE OF name, entity_type ON entities BEGIN
    INSERT INTO entities_fts(entities_fts, rowid, name, entity_type)
        VALUES ('delete', old.id, old.name, old.entity_type);
    INSERT INTO entities_fts(rowid, name, entity_type) VALUES (new.id, new.name, new.entity_type);
END;

CREATE TRIGGER entity_vectors_entity_ai AFTER INSERT ON entities BEGIN
    DELETE FROM entity_vectors WHERE entity_id = new.id;  -- left by a deleted entity's id
END;
CREATE TRIGGER entity_vectors_entity_ad AFTER DELETE ON entities BEGIN
    DELETE FROM entity_vectors WHERE entity_id = old.id;
END;
CREATE TRIGGER entity_vectors_entity_au AFTER UPDATE OF name, entity_type ON entities BEGIN
    DELETE FROM entity_vectors WHERE entity_id IN (old.id, new.id);
END;
