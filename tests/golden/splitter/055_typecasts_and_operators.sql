SELECT '1'::int, a->>'k', b @> '{}', 10 / 2 - -3;
SELECT 2;
