-- memfts schema v5: German and Nordic transliterations on the spelling key.
-- People who cannot type ü ö ä å write ue oe ae aa: "Mueller" for Müller, "Schroeder" for
-- Schröder, "Aalborg" for Ålborg. The index folds ü to u (remove_diacritics), so it holds
-- "muller"; the spelling key now also writes ue, oe, ae and aa as u, o, a and a, on both
-- sides, so "mueller" and "muller" share a key. (The search ranks a word that shares the key
-- only through these pairs below the word as typed: "due" and "du" share one too.)
-- SQLite cannot change a generated column in place: the key is dropped and added again; it
-- is VIRTUAL (computed when read), so nothing is rewritten. vocabulary.loose_key() is the
-- same mapping in Python.
DROP INDEX search_terms_loose;
ALTER TABLE search_terms DROP COLUMN loose;
ALTER TABLE search_terms ADD COLUMN loose TEXT GENERATED ALWAYS AS (
    replace(replace(replace(replace(
    replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(term,
        'ı', 'i'), 'æ', 'ae'), 'ø', 'o'), 'œ', 'oe'), 'ß', 'ss'), 'ł', 'l'),
        'đ', 'd'), 'ð', 'd'), 'þ', 'th'), 'ά', 'α'), 'έ', 'ε'), 'ή', 'η'),
        'ί', 'ι'), 'ό', 'ο'), 'ύ', 'υ'), 'ώ', 'ω'), 'ϊ', 'ι'), 'ϋ', 'υ'),
        'ΐ', 'ι'), 'ΰ', 'υ'), 'ς', 'σ'),
        'ue', 'u'), 'oe', 'o'), 'ae', 'a'), 'aa', 'a')
) VIRTUAL;
CREATE INDEX search_terms_loose ON search_terms(loose);
