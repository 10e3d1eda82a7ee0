-- The benchmark's `docs` table: :rows rows of text and JSON from random words and numbers, so
-- the data compresses about 3-4x like real data rather than 100x like bare pgbench.
CREATE TABLE docs (
    id      bigint PRIMARY KEY,
    title   text NOT NULL,
    body    text NOT NULL,
    meta    jsonb NOT NULL,
    created timestamptz NOT NULL
);

-- 4096 pronounceable "words" of 2-4 syllables.
CREATE TEMP TABLE words AS
SELECT i AS n,
       (SELECT string_agg(
                   substr('bcdfghjklmnprstvwz', 1 + ((i * 7 + s * 13 + i / (s + 1)) % 18), 1)
                || substr('aeiouy', 1 + ((i * 5 + s * 3) % 6), 1), '')
          FROM generate_series(0, 1 + i % 3) AS s) AS w
  FROM generate_series(0, 4095) AS i;
ALTER TABLE words ADD PRIMARY KEY (n);

-- 65536 random phrases of 6 words; a row's body picks 5 of them and adds numbers, so rows
-- differ while the text keeps a natural-language-like redundancy. Looked up by key, not by
-- array subscript (a large array would be detoasted on every access).
CREATE TEMP TABLE phrase_words AS
SELECT i, k, (random() * 4095)::int AS w
  FROM generate_series(0, 65535) AS i, generate_series(1, 6) AS k;
CREATE TEMP TABLE phrases AS
SELECT pw.i AS n, string_agg(w.w, ' ' ORDER BY pw.k) AS p
  FROM phrase_words AS pw JOIN words AS w ON w.n = pw.w
 GROUP BY pw.i;
ALTER TABLE phrases ADD PRIMARY KEY (n);
ANALYZE words;
ANALYZE phrases;

CREATE TEMP TABLE picks AS
SELECT g,
       (random() * 4095)::int AS w1, (random() * 4095)::int AS w2, (random() * 4095)::int AS w3,
       (random() * 4095)::int AS w4,
       (random() * 65535)::int AS p1, (random() * 65535)::int AS p2, (random() * 65535)::int AS p3,
       (random() * 65535)::int AS p4, (random() * 65535)::int AS p5
  FROM generate_series(1, :rows) AS g;

INSERT INTO docs
SELECT k.g,
       initcap(a.w || ' ' || b.w),
       q1.p || ' ' || (random() * 100000)::int || ' ' || q2.p || ' ' || q3.p || ' '
           || (random() * 1000)::int || ' ' || q4.p || ' ' || q5.p,
       jsonb_build_object(
           'author', c.w,
           'score', round((random() * 1000)::numeric, 2),
           'views', (random() * 1e6)::int,
           'tags', jsonb_build_array(d.w, a.w)),
       timestamptz '2020-01-01' + random() * interval '6 years'
  FROM picks AS k
  JOIN words AS a ON a.n = k.w1
  JOIN words AS b ON b.n = k.w2
  JOIN words AS c ON c.n = k.w3
  JOIN words AS d ON d.n = k.w4
  JOIN phrases AS q1 ON q1.n = k.p1
  JOIN phrases AS q2 ON q2.n = k.p2
  JOIN phrases AS q3 ON q3.n = k.p3
  JOIN phrases AS q4 ON q4.n = k.p4
  JOIN phrases AS q5 ON q5.n = k.p5;
