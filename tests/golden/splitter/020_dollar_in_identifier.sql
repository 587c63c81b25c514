SELECT a$b, c$$d FROM t$1;
SELECT 2;
