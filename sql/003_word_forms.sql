-- memfts schema v3: word forms. Each indexed word gets its stem (Snowball, in the language
-- recorded in search_settings), so a query word also finds the other forms of it: "renewing"
-- finds "renew", "deployments" "deploy". The stem is computed by memfts when it records a word
-- (SQLite has no stemmer); rows without one (written before this version, or by a tool other
-- than memfts) have NULL and are given theirs by the next memfts that opens or writes the file.
-- The FTS5 indexes are unchanged: they still hold the words as written, so exact phrases and
-- prefixes stay exact, and any sqlite3 shell can still read and write the file.
ALTER TABLE search_terms ADD COLUMN stem TEXT;
CREATE INDEX search_terms_stem ON search_terms(stem);
CREATE INDEX search_terms_unstemmed ON search_terms(id) WHERE stem IS NULL;

-- Settings of the search that belong to the file, not to one process: today the language the
-- stems were made in ('stem_language').
CREATE TABLE search_settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
