-- Socket window word count, the classic streaming example: words typed
-- into `nc` are counted per 5-second tumbling window of their arrival
-- time. Start the text server first, in another terminal:
--
--   nc -lk 9999
--
-- then, with the server running:
--
--   psql -h 127.0.0.1 -p 4577 -U runnel -f examples/socket_window_wordcount/socket_window_wordcount.sql
--
-- type lines into nc, and read the counts of windows that closed:
--
--   psql -h 127.0.0.1 -p 4577 -U runnel -c 'SELECT * FROM window_word_counts ORDER BY window_start DESC, n DESC'
--
-- A window closes when a line arrives after its end (the watermark is the
-- arrival time of the latest line). A socket cannot be replayed: lines
-- sent while the server is down are not seen (as with Flink's
-- socketTextStream).

CREATE SOURCE socket_lines (line varchar, arrived timestamp, WATERMARK FOR arrived AS arrived)
  WITH (connector = 'socket', hostname = '127.0.0.1', port = '9999');

CREATE MATERIALIZED VIEW window_word_counts AS
SELECT window_start, word, count(*) AS n
FROM (
  SELECT window_start, unnest(string_to_array(lower(line), ' ')) AS word
  FROM TUMBLE(socket_lines, arrived, INTERVAL '5' SECOND)
) AS words
WHERE word <> ''
GROUP BY window_start, word
EMIT ON WINDOW CLOSE;
