-- WordCount over a text file, the classic batch example: the file source
-- reads the file once (one row per line) and ends, so the view holds the
-- final counts. Run from the root of the checkout, with the server
-- started there too (the path is relative to the server's directory):
--
--   psql -h 127.0.0.1 -p 4577 -U runnel -f examples/wordcount/wordcount.sql

CREATE SOURCE wordcount_lines (line varchar)
  WITH (connector = 'file', path = 'examples/wordcount/input.txt');

CREATE MATERIALIZED VIEW word_counts AS
SELECT word, count(*) AS n
FROM (
  SELECT unnest(string_to_array(regexp_replace(lower(line), '[^a-z'']+', ' ', 'g'), ' ')) AS word
  FROM wordcount_lines
) AS words
WHERE word <> ''
GROUP BY word;

-- The file is read in well under a second; run this again if it is empty.
SELECT word, n FROM word_counts ORDER BY n DESC, word LIMIT 10;
