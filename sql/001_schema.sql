-- memfts schema v1: the knowledge graph, its full-text indexes and the triggers that keep
-- them in sync. Plain SQL on purpose: any sqlite3 shell >= 3.40 can read and repair it.

CREATE TABLE entities (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    entity_type TEXT NOT NULL,
    -- microseconds since the epoch of the last change to the entity or its observations;
    -- an empty search lists the most recently changed entities first
    updated_at  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX entities_updated_at ON entities(updated_at);

-- An observation's id is its entity's id times 2^20 plus its position: the search reads the
-- entity of a full-text hit straight from the hit's rowid (id >> 20), without a lookup per row,
-- and an entity's observations are one id range. The CHECK keeps rows written by other tools
-- honest: give new rows an id, e.g. (SELECT coalesce(max(id) + 1, E << 20) FROM observations
-- WHERE id BETWEEN E << 20 AND (E << 20) + 1048575) for entity E.
CREATE TABLE observations (
    id        INTEGER PRIMARY KEY,              -- insertion order = display order
    entity_id INTEGER NOT NULL REFERENCES entities(id) ON DELETE CASCADE,
    content   TEXT NOT NULL,
    UNIQUE (entity_id, content),                -- adding an existing observation is a no-op
    CHECK (id >> 20 = entity_id)
);

-- Relations are kept by name, not by foreign key: agents often relate entities before
-- creating them, exactly as the official server allows.
CREATE TABLE relations (
    id            INTEGER PRIMARY KEY,
    from_name     TEXT NOT NULL,
    to_name       TEXT NOT NULL,
    relation_type TEXT NOT NULL,
    UNIQUE (from_name, to_name, relation_type)
);
CREATE INDEX relations_to_name ON relations(to_name);

-- Word indexes, ranked with bm25. External content: the text lives once, in the tables above.
CREATE VIRTUAL TABLE entities_fts USING fts5(
    name, entity_type,
    content='entities', content_rowid='id',
    tokenize='unicode61 remove_diacritics 2'
);
CREATE VIRTUAL TABLE observations_fts USING fts5(
    content,
    content='observations', content_rowid='id',
    tokenize='unicode61 remove_diacritics 2'
);

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

CREATE TRIGGER observations_ai AFTER INSERT ON observations BEGIN
    INSERT INTO observations_fts(rowid, content) VALUES (new.id, new.content);
END;
CREATE TRIGGER observations_ad AFTER DELETE ON observations BEGIN
    INSERT INTO observations_fts(observations_fts, rowid, content) VALUES ('delete', old.id, old.content);
END;
CREATE TRIGGER observations_au AFTER UPDATE OF content ON observations BEGIN
    INSERT INTO observations_fts(observations_fts, rowid, content) VALUES ('delete', old.id, old.content);
    INSERT INTO observations_fts(rowid, content) VALUES (new.id, new.content);
END;

-- Every distinct indexed word, so a partial word ("script") can be widened to the words that
-- contain it ("typescript", "javascript") without scanning the data. The store adds words as
-- it writes; a word whose last use is deleted stays, harmlessly matching nothing.
CREATE TABLE search_terms (
    id   INTEGER PRIMARY KEY,
    term TEXT NOT NULL UNIQUE
);
CREATE VIRTUAL TABLE search_terms_trigram USING fts5(
    term,
    content='search_terms', content_rowid='id',
    tokenize='trigram'
);
CREATE TRIGGER search_terms_ai AFTER INSERT ON search_terms BEGIN
    INSERT INTO search_terms_trigram(rowid, term) VALUES (new.id, new.term);
END;
CREATE TRIGGER search_terms_ad AFTER DELETE ON search_terms BEGIN
    INSERT INTO search_terms_trigram(search_terms_trigram, rowid, term) VALUES ('delete', old.id, old.term);
END;
