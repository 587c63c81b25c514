INSERT INTO t (a, b) VALUES (1, '{"x": "(;"}'), (2, now()), (3, coalesce(null, (1)));
SELECT 2;
