-- memfts schema v4: the official server's memory.jsonl that memfts follows (MEMORY_FILE_PATH).
-- A memfts started with only MEMORY_FILE_PATH keeps its database beside that file and merges
-- the file in; each later start merges only the lines written there since. A line is known by
-- a hash of its bytes: the official server rewrites the whole file on every change, so a new
-- or changed entity or relation is a line never seen before, wherever it now stands.
CREATE TABLE followed_files (
    path     TEXT PRIMARY KEY,   -- the JSONL file, absolute
    size     INTEGER NOT NULL,   -- its size and modification time when last merged:
    mtime_ns INTEGER NOT NULL,   -- a start that finds both unchanged reads nothing
    merged_at INTEGER NOT NULL   -- microseconds since the epoch
);
CREATE TABLE followed_lines (
    path TEXT NOT NULL REFERENCES followed_files(path) ON DELETE CASCADE,
    hash BLOB NOT NULL,          -- the first 16 bytes of the SHA-256 of the line (trimmed)
    PRIMARY KEY (path, hash)
) WITHOUT ROWID;
