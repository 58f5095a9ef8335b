-- memfts schema v2: a spelling key for each indexed word, for "did you mean".
-- The unicode61 tokenizer folds case and strips accents (é -> e) but keeps letters that have
-- no decomposition: ı æ ø œ ß ł đ ð þ. People type them as i, ae, o, oe, ss, l, d, d, th, so
-- "yildiz" must find "yıldız" and "aebelo" "æbelø". The key is computed by SQLite itself (a
-- virtual column), so rows written by any tool get it, and indexed for exact lookups.
-- search.loose_key() is the same mapping in Python, for the query side.
ALTER TABLE search_terms ADD COLUMN loose TEXT GENERATED ALWAYS AS (
    replace(replace(replace(replace(replace(replace(replace(replace(replace(term,
        'ı', 'i'), 'æ', 'ae'), 'ø', 'o'), 'œ', 'oe'), 'ß', 'ss'), 'ł', 'l'), 'đ', 'd'),
        'ð', 'd'), 'þ', 'th')
) VIRTUAL;
CREATE INDEX search_terms_loose ON search_terms(loose);
