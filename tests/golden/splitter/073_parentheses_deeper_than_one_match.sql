SELECT ((((('a;'), E'b\';'), 'c;'), (((('d;'))))), ';');
SELECT (((((((1;2))))))) AS deep;
SELECT ((1, E'x\\'), (2 -- a comment; in a group
, 3), (4 /* a ; comment */), ($$;$$), ($t$;$t$, 5));
SELECT 2;
