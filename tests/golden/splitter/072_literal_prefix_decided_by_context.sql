SELECT xe'a\', 'b;';
SELECT (xe'a\', e'c\';'), 'd;';
SELECT $$a$$E'b\';';
SELECT $q$x$q$e'y\';' AS z;
SELECT 'a'E'b\';';
SELECT "x"E'c\';';
SELECT /* c */E'd\';';
SELECT U&'a\' , U&"b;", u&'c;';
SELECT 2;
