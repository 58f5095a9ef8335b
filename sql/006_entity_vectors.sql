-- memfts schema v6: a place for the optional semantic search's vectors (`memfts[semantic]`).
-- One vector per entity, describing its name, type and observations, written in the same
-- transaction as the text by a memfts that has the extra. Without the extra these tables stay
-- empty. The triggers below delete an entity's vector whenever its text changes, whoever
-- changes it (a memfts without the extra, the sqlite3 shell): a vector never describes text
-- that is gone, and `memfts embed` finds the entities left without one.

-- The model that made a vector: vectors of different models cannot be compared.
CREATE TABLE embedding_models (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    dims INTEGER NOT NULL
);

-- seq grows with every vector written (AUTOINCREMENT never reuses one), so a process holding
-- the vectors in memory reads only the rows past the last seq it saw.
CREATE TABLE entity_vectors (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    entity_id INTEGER NOT NULL UNIQUE,  -- entities.id; kept in step by the triggers below
    model_id  INTEGER NOT NULL REFERENCES embedding_models(id),
    vector    BLOB NOT NULL             -- dims signed bytes: the unit vector times 127, rounded
);

CREATE TRIGGER entity_vectors_entity_ai AFTER INSERT ON entities BEGIN
    DELETE FROM entity_vectors WHERE entity_id = new.id;  -- left by a deleted entity's id
END;
CREATE TRIGGER entity_vectors_entity_ad AFTER DELETE ON entities BEGIN
    DELETE FROM entity_vectors WHERE entity_id = old.id;
END;
CREATE TRIGGER entity_vectors_entity_au AFTER UPDATE OF name, entity_type ON entities BEGIN
    DELETE FROM entity_vectors WHERE entity_id IN (old.id, new.id);
END;
CREATE TRIGGER entity_vectors_observation_ai AFTER INSERT ON observations BEGIN
    DELETE FROM entity_vectors WHERE entity_id = new.entity_id;
END;
CREATE TRIGGER entity_vectors_observation_ad AFTER DELETE ON observations BEGIN
    DELETE FROM entity_vectors WHERE entity_id = old.entity_id;
END;
CREATE TRIGGER entity_vectors_observation_au AFTER UPDATE OF content, entity_id ON observations
BEGIN
    DELETE FROM entity_vectors WHERE entity_id IN (old.entity_id, new.entity_id);
END;
