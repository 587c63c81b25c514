INSERT INTO t VALUES (1, E'a\'); b'), (2, 'c');
SELECT 2;
