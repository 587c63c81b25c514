SELECT $a$ $ab$ ; $b$ ; $a$;
SELECT 2;
