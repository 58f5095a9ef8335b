-- memfts schema v8: the upkeep after each write merges the full-text indexes' segments two at
-- a time. Each write transaction adds a segment to every full-text index and a search looks
-- each word up in each segment, so after a write memfts runs FTS5's 'merge' command with a
-- small positive page count on an index holding more than a few (see src/memfts/segments.py).
-- Such a command merges the segments of a level once 'usermerge' of them are there (default
-- 4); at 2, the small segments of recent writes are merged pairwise as they come, and the
-- large one an import leaves is not rewritten for each write.
INSERT INTO entities_fts(entities_fts, rank) VALUES ('usermerge', 2);
INSERT INTO observations_fts(observations_fts, rank) VALUES ('usermerge', 2);
INSERT INTO search_terms_trigram(search_terms_trigram, rank) VALUES ('usermerge', 2);
