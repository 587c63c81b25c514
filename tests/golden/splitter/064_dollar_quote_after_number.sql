SELECT 1 AS x, $q$;$q$;
SELECT 2;
