-- memfts schema v2: a spelling key for each indexed word.
-- The unicode61 tokenizer folds case and strips Latin accents (é -> e) but keeps letters that
-- have no decomposition (ı æ ø œ ß ł đ ð þ), Greek accents (ά έ ό) and the final sigma (ς).
-- People type i, ae, o, oe, ss, l, d, d, th, unaccented Greek and σ, so "yildiz" must find
-- "yıldız", "aebelo" "æbelø" and "καφες" "καφές". The search looks a query word's key up here
-- and also searches the indexed words that share it. The key is computed by SQLite itself (a
-- virtual column, so rows written by any tool have it) and indexed for exact lookups;
-- vocabulary.loose_key() is the same mapping in Python, for the query side.
ALTER TABLE search_terms ADD COLUMN loose TEXT GENERATED ALWAYS AS (
    replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(term,
        'ı', 'i'), 'æ', 'ae'), 'ø', 'o'), 'œ', 'oe'), 'ß', 'ss'), 'ł', 'l'),
        'đ', 'd'), 'ð', 'd'), 'þ', 'th'), 'ά', 'α'), 'έ', 'ε'), 'ή', 'η'),
        'ί', 'ι'), 'ό', 'ο'), 'ύ', 'υ'), 'ώ', 'ω'), 'ϊ', 'ι'), 'ϋ', 'υ'),
        'ΐ', 'ι'), 'ΰ', 'υ'), 'ς', 'σ')
) VIRTUAL;
CREATE INDEX search_terms_loose ON search_terms(loose);
