-- Sample table with awkward text for backup/restore round trips: newlines, tabs,
-- carriage returns, backslashes (including COPY's "\." end marker and "\N" null
-- marker as literal text), quotes, unicode, long values, NULLs and jsonb.
-- Used by the test harness (tests/src/lib.rs, load_sample) and by scripts/demo.
CREATE TABLE public.notes (
    id   bigserial PRIMARY KEY,
    body text,
    tags jsonb
);

INSERT INTO public.notes (body, tags)
SELECT
    CASE
        WHEN i % 97 = 0 THEN NULL
        WHEN i % 8 = 0 THEN 'plain note number ' || i
        WHEN i % 8 = 1 THEN E'first line\nsecond line\n\tindented ' || i
        WHEN i % 8 = 2 THEN E'back\\slash, \\N is not null, C:\\temp\\' || i || E'\n\\.\nafter the end marker'
        WHEN i % 8 = 3 THEN 'ünïcödé ✓ 日本語 Ελληνικά עברית 🐘🔐 ' || i
        WHEN i % 8 = 4 THEN repeat(md5(i::text), 1 + i % 64)
        WHEN i % 8 = 5 THEN E'it''s "quoted"; DROP TABLE notes; --\r\nCRLF ' || i
        WHEN i % 8 = 6 THEN ''
        ELSE E'tab\tseparated\tvalues\t' || i || E'\u00a0nbsp'
    END,
    CASE
        WHEN i % 50 = 0 THEN NULL
        ELSE jsonb_build_object(
            'n', i,
            'even', i % 2 = 0,
            'labels', jsonb_build_array('t' || (i % 7), 'ü', E'a\nb'),
            'score', (i % 1000) / 7.0
        )
    END
FROM generate_series(1, 5000) AS i;
